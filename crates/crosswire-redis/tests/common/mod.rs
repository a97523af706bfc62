//! Helpers for the Redis tests: fast health timings, an event log, waits with deadlines and a
//! raw command client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crosswire::{Broker, BrokerMessage};
use crosswire_redis::{HealthEvent, RedisBroker, RedisConfig};
pub use crosswire_testkit::RedisServer;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// PING interval and timeout used by the tests.
pub const PING: Duration = Duration::from_millis(200);
/// A generous deadline for things that should happen quickly.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Starts a `redis-server`. Panics when it is not installed or does not start: the tests
/// that need it fail rather than skip.
pub fn redis() -> RedisServer {
    assert!(
        RedisServer::available(),
        "redis-server is not on PATH: install it (scripts/test.sh does) — tests that need it fail rather than skip"
    );
    RedisServer::start()
        .unwrap_or_else(|e| panic!("redis-server is on PATH but did not start: {e}"))
}

/// Defaults with short timings: PING every 200 ms with a 200 ms timeout.
pub fn fast_config<S: AsRef<str>>(urls: &[S]) -> RedisConfig {
    RedisConfig::from_urls(urls.iter().map(|u| u.as_ref()))
        .expect("valid urls")
        .with_redis_ping_interval(PING)
        .with_redis_ping_timeout(PING)
        .with_command_timeout(Duration::from_secs(1))
        .with_connect_timeout(Duration::from_secs(1))
        .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(300))
}

/// Every health event a broker reported.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<HealthEvent>>>);

impl Events {
    /// A callback appending to this log.
    pub fn callback(&self) -> impl Fn(&HealthEvent) + Send + Sync + 'static {
        let log = Arc::clone(&self.0);
        move |event| log.lock().unwrap().push(event.clone())
    }

    /// All events so far.
    pub fn all(&self) -> Vec<HealthEvent> {
        self.0.lock().unwrap().clone()
    }

    /// The first event (already logged or coming) matching `pred`; panics after `DEADLINE`.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&HealthEvent) -> bool) -> HealthEvent {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(e) = self.all().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no health event {what} within {DEADLINE:?}; got {:#?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `DEADLINE`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every node of `broker` is healthy in both roles.
pub async fn wait_healthy(broker: &RedisBroker) {
    wait_until("all nodes healthy", || {
        let h = broker.health();
        h.healthy_publishers == h.total && h.healthy_subscribers == h.total
    })
    .await;
}

/// A broker with the given config, started.
pub fn broker(config: RedisConfig) -> RedisBroker {
    RedisBroker::new(config).expect("valid config")
}

/// The next message, or `None` after `within`.
pub async fn recv(
    rx: &mut mpsc::Receiver<BrokerMessage>,
    within: Duration,
) -> Option<BrokerMessage> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// The next message's payload as text; panics when none comes within `DEADLINE`.
pub async fn recv_text(rx: &mut mpsc::Receiver<BrokerMessage>) -> String {
    let m = recv(rx, DEADLINE)
        .await
        .expect("a message within the deadline");
    String::from_utf8(m.payload.to_vec()).expect("utf-8 payload")
}

/// Sends one command over a fresh connection and returns the first line of the reply.
pub fn redis_command(port: u16, args: &[&str]) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut command = format!("*{}\r\n", args.len());
    for a in args {
        command.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(command.as_bytes()).expect("write");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("read reply");
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).trim_end().to_string()
}

/// A channel name whose `ChannelAffine` home on `broker` is the node `node`.
pub fn channel_homed_on(broker: &RedisBroker, node: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|ch| broker.publish_targets(ch).first().map(|n| &**n) == Some(node))
        .expect("some channel hashes to the node")
}

/// Publishes without waiting, then awaits every outcome in order (publish order is fixed at
/// call time, so this is a fast sequential stream).
pub async fn publish_all(
    broker: &dyn Broker,
    channel: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    let pending: Vec<_> = payloads
        .into_iter()
        .map(|p| broker.publish(channel, p.into()))
        .collect();
    for p in pending {
        p.await.expect("publish accepted");
    }
}

/// The process id of the Redis listening on `port` (from `INFO server`).
pub fn redis_pid(port: u16) -> u32 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(b"INFO server\r\n").expect("write");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("process_id:") || !text[text.find("process_id:").unwrap()..].contains('\n')
    {
        let n = stream.read(&mut buf).expect("read INFO");
        assert!(n > 0, "INFO reply ended early");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = text.lines().find(|l| l.starts_with("process_id:")).unwrap();
    line["process_id:".len()..].trim().parse().expect("pid")
}

/// Sends a signal (`STOP`, `CONT`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

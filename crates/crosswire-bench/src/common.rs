//! Pieces shared by the scenarios: settings, connecting many clients, receiving stamped
//! messages, measuring server and client resource use.

use crate::procfs::{self, ProcSample, Usage};
use crate::stamp::{now_us, parse_stamp, Padding};
use crate::stats::{Observation, SeqTracker, ShardedHistogram};
use crate::ws::{self, ConnectOptions, Ws};
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Settings common to every scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node the publisher (or the only node) connects to.
    pub url: String,
    /// Nodes clients are spread over, round-robin (defaults to `[url]`).
    pub urls: Vec<String>,
    /// Server processes to measure (CPU time, RSS).
    pub server_pids: Vec<u32>,
    /// How many connection attempts run at once.
    pub connect_concurrency: usize,
    /// Prefix of every client id of this run (unique per run).
    pub run_id: String,
    /// How clients connect (TLS authorities, permessage-deflate).
    pub connect: ConnectOptions,
    /// What fills the messages sent up to their size.
    pub padding: Padding,
}

impl Settings {
    /// The node client number `i` connects to.
    pub fn url_for(&self, i: usize) -> &str {
        if self.urls.is_empty() {
            &self.url
        } else {
            &self.urls[i % self.urls.len()]
        }
    }

    /// Every distinct node of the run (publisher node first).
    pub fn all_urls(&self) -> Vec<String> {
        let mut v = vec![self.url.clone()];
        for u in &self.urls {
            if !v.contains(u) {
                v.push(u.clone());
            }
        }
        v
    }
}

/// A fresh run id: `cwb<pid>x<time>` so that ids never collide with an earlier run.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("cwb{}x{:x}", std::process::id(), nanos)
}

/// Checks that every node answers a connection and a heartbeat; the error says which did not.
pub async fn probe(settings: &Settings) -> Result<()> {
    for (i, url) in settings.all_urls().iter().enumerate() {
        let id = format!("{}-probe{i}", settings.run_id);
        let mut conn = ws::connect_with(url, &id, &settings.connect)
            .await
            .with_context(|| format!("server unreachable at {url}"))?;
        ws::heartbeat(&mut conn)
            .await
            .with_context(|| format!("server at {url} does not answer the heartbeat"))?;
        ws::close(conn).await;
    }
    Ok(())
}

/// Opens `n` connections with ids `<run>-<tag><i>` spread over the nodes, at most
/// `connect_concurrency` at a time; each is optionally joined to `room`. Results keep the
/// index order.
pub async fn connect_many(
    settings: &Settings,
    n: usize,
    tag: &str,
    room: Option<&str>,
    heartbeat: bool,
) -> Vec<Result<Ws>> {
    let sem = Arc::new(Semaphore::new(settings.connect_concurrency.max(1)));
    let handles: Vec<JoinHandle<Result<Ws>>> = (0..n)
        .map(|i| {
            let sem = sem.clone();
            let url = settings.url_for(i).to_string();
            let id = format!("{}-{tag}{i}", settings.run_id);
            let room = room.map(str::to_string);
            let options = settings.connect.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let mut conn = ws::connect_with(&url, &id, &options).await?;
                if let Some(room) = room {
                    ws::join(&mut conn, &room)
                        .await
                        .with_context(|| format!("{id} joining {room}"))?;
                }
                if heartbeat {
                    ws::heartbeat(&mut conn)
                        .await
                        .with_context(|| format!("{id} heartbeat"))?;
                }
                Ok(conn)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| Err(anyhow!("connect task failed: {e}"))),
        );
    }
    out
}

/// Like [`connect_many`] but fails if any connection failed (reporting how many did).
pub async fn connect_all(
    settings: &Settings,
    n: usize,
    tag: &str,
    room: Option<&str>,
) -> Result<Vec<Ws>> {
    let results = connect_many(settings, n, tag, room, false).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut conns = Vec::with_capacity(n);
    let mut first_err = None;
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(e) if first_err.is_none() => first_err = Some(e),
            Err(_) => {}
        }
    }
    match first_err {
        Some(e) => {
            for c in conns {
                ws::close(c).await;
            }
            Err(e.context(format!("{failed} of {n} connections failed")))
        }
        None => Ok(conns),
    }
}

/// A counter on its own cache line, so that receivers on different threads do not contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

/// Counters shared by all receivers of a run.
#[derive(Debug)]
pub struct Shared {
    delivered: Vec<PaddedCounter>,
    /// Receivers whose connection ended before the run did.
    pub disconnected: AtomicU64,
    /// Bytes the receivers read from their sockets while receiving (each adds its count
    /// once, when it stops).
    pub bytes_read: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            delivered: (0..64).map(|_| PaddedCounter::default()).collect(),
            disconnected: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        }
    }
}

impl Shared {
    /// Counts one unique delivery for receiver `key`.
    pub fn add_delivery(&self, key: usize) {
        self.delivered[key % self.delivered.len()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Unique deliveries so far, all receivers together.
    pub fn delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one receiver saw.
#[derive(Debug, Clone, Default)]
pub struct ReceiverResult {
    /// Sequence bookkeeping.
    pub tracker: SeqTracker,
    /// Time of the last unique delivery ([`now_us`]), 0 if none.
    pub last_delivery_us: u64,
}

/// Receives stamped `msg` events on `conn` until `stop` flips or the connection ends.
///
/// Latencies (now − send stamp) go to `hist` in batches; the returned tracker counts unique,
/// duplicate and out-of-order deliveries.
pub async fn receive(
    conn: Ws,
    key: usize,
    limit: u64,
    hist: Arc<ShardedHistogram>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> ReceiverResult {
    receive_observing(conn, key, limit, hist, shared, stop, |_, _| {}).await
}

/// [`receive`], also showing every stamped frame (its text and sequence number) to
/// `observe`, e.g. to check fields the stamp does not cover.
pub async fn receive_observing(
    mut conn: Ws,
    key: usize,
    limit: u64,
    hist: Arc<ShardedHistogram>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut observe: impl FnMut(&str, u64) + Send,
) -> ReceiverResult {
    let mut res = ReceiverResult {
        tracker: SeqTracker::new(limit),
        last_delivery_us: 0,
    };
    let mut batch: Vec<u64> = Vec::with_capacity(64);
    let mut open = true;
    // What the connection carried before (upgrade, join reply) does not count.
    let bytes_before = conn.bytes_read();
    // One registration for the whole loop rather than one per message.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            msg = conn.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(stamp) = parse_stamp(t.as_str()) {
                        let now = now_us();
                        observe(t.as_str(), stamp.seq);
                        if res.tracker.observe(stamp.seq) == Observation::New {
                            batch.push(now.saturating_sub(stamp.sent_us));
                            if batch.len() == batch.capacity() {
                                hist.record_all(key, &batch);
                                batch.clear();
                            }
                            shared.add_delivery(key);
                            res.last_delivery_us = now;
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.disconnected.fetch_add(1, Ordering::Relaxed);
                    open = false;
                    break;
                }
            },
            _ = &mut stopped => break,
        }
    }
    hist.record_all(key, &batch);
    shared
        .bytes_read
        .fetch_add(conn.bytes_read() - bytes_before, Ordering::Relaxed);
    if open {
        ws::close(conn).await;
    }
    res
}

/// Totals over all receivers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Unique deliveries.
    pub unique: u64,
    /// Extra copies.
    pub duplicates: u64,
    /// Deliveries that arrived after a higher sequence number.
    pub out_of_order: u64,
    /// Stamps with an impossible sequence number.
    pub invalid: u64,
    /// Time of the last delivery to any receiver ([`now_us`]).
    pub last_delivery_us: u64,
}

/// Stops the receivers and adds up what they saw.
pub async fn collect(
    stop: &watch::Sender<bool>,
    handles: Vec<JoinHandle<ReceiverResult>>,
) -> Totals {
    let _ = stop.send(true);
    let mut t = Totals::default();
    for h in handles {
        if let Ok(r) = h.await {
            t.unique += r.tracker.unique;
            t.duplicates += r.tracker.duplicates;
            t.out_of_order += r.tracker.out_of_order;
            t.invalid += r.tracker.invalid;
            t.last_delivery_us = t.last_delivery_us.max(r.last_delivery_us);
        }
    }
    t
}

/// Waits until `shared.delivered` reaches `expected`, `timeout` passes, or nothing arrived for
/// `stall`. Returns true when every delivery arrived.
pub async fn wait_deliveries(
    shared: &Shared,
    expected: u64,
    timeout: Duration,
    stall: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = shared.delivered();
    let mut last_change = Instant::now();
    loop {
        let now_count = shared.delivered();
        if now_count >= expected {
            return true;
        }
        let now = Instant::now();
        if now_count != last {
            last = now_count;
            last_change = now;
        }
        if now >= deadline || now.duration_since(last_change) >= stall {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Measures CPU time and RSS of the server processes and of the load generator over a window.
pub struct Meter {
    pids: Vec<u32>,
    server_before: Vec<ProcSample>,
    client_before: Option<ProcSample>,
    machine_before: Option<procfs::MachineTicks>,
    started: Instant,
}

/// What [`Meter::finish`] measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Server processes (when pids were given).
    pub server: Option<Usage>,
    /// The load generator itself.
    pub client: Option<Usage>,
    /// The whole machine.
    pub machine: Option<procfs::MachineUsage>,
}

impl Meter {
    /// Takes the "before" samples; fails when a server pid cannot be read.
    pub fn start(pids: &[u32]) -> Result<Self> {
        Ok(Self {
            pids: pids.to_vec(),
            server_before: procfs::sample_all(pids)?,
            client_before: procfs::sample(0).ok(),
            machine_before: procfs::sample_machine().ok(),
            started: Instant::now(),
        })
    }

    /// Seconds since [`Meter::start`].
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Takes the "after" samples; `ops` is the number of deliveries or acks in the window.
    pub fn finish(&self, ops: u64) -> Measured {
        let secs = self.elapsed_secs();
        let tps = procfs::clock_ticks_per_second();
        let server = if self.pids.is_empty() {
            None
        } else {
            match procfs::sample_all(&self.pids) {
                Ok(after) => Some(Usage::between(&self.server_before, &after, secs, ops, tps)),
                Err(e) => {
                    eprintln!("warning: cannot sample server after the run: {e:#}");
                    None
                }
            }
        };
        let client = match (self.client_before, procfs::sample(0)) {
            (Some(b), Ok(a)) => Some(Usage::between(&[b], &[a], secs, ops, tps)),
            _ => None,
        };
        let accounted_ms =
            server.as_ref().map_or(0.0, |u| u.cpu_ms) + client.as_ref().map_or(0.0, |u| u.cpu_ms);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let machine = match (self.machine_before, procfs::sample_machine()) {
            (Some(b), Ok(a)) => Some(procfs::MachineUsage::between(
                b,
                a,
                secs,
                accounted_ms,
                tps,
                cores,
            )),
            _ => None,
        };
        Measured {
            server,
            client,
            machine,
        }
    }
}

//! What room history costs: the fan-out scenario's load on a recoverable room with history on
//! and off, side by side in one run (`crosswire-bench history`, docs/BENCHMARKS.md "History
//! (issue 10)").
//!
//! Each run starts fresh nodes ([`Nodes`]): a single node, or two nodes over one Redis
//! ([`Setup`]), with the relay's history on (`crosswire serve --history`) or off. Receivers
//! join one room (spread round-robin over the nodes), the publisher (on the first node, not a
//! member) sends stamped `room` messages at a fixed rate, and the run measures what the
//! fan-out scenario does ([`crate::scenarios::fanout`]): deliveries, loss, duplicates, latency
//! from the send stamp, the nodes' CPU time per delivery from `/proc` ([`crate::common::Meter`])
//! and, in a cluster, the redis-server's. Rounds alternate the order of on and off (off then
//! on, then on then off, …) so that what the machine does meanwhile falls on both alike;
//! the summary gives both rows of each setup over all rounds and their ratio (on / off).
//!
//! Every receiver also checks what history promises (docs/PROTOCOL.md, "History and
//! recovery"): with history on its join reply names the stream (`"stream":"relay/<room>"`,
//! `"recovered":false`) and every `msg` carries `stream`, `offset` and `epoch`, the offset of
//! message `n` (from 0) of the fresh stream being `n + 1` and each receiver's offsets
//! consecutive, with one epoch; with history off the join reply is `{"ok":true}` and no
//! message has any of the three fields. [`Comparison::problems`] lists every deviation, and
//! loss, duplicates, reordering and disconnections.
//!
//! [`ProcessNodes`] runs `crosswire serve` processes (and a `redis-server`); the test
//! `tests/history_fanout.rs` implements [`Nodes`] with nodes in its own process.

use crate::common::{self, Meter, ReceiverResult, Settings, Shared};
use crate::procfs::{self, MachineUsage, Usage};
use crate::report;
use crate::scenarios::fanout;
use crate::scenarios::publisher::{Job, Publisher};
use crate::stamp::{self, Padding};
use crate::stats::{self, LatencySummary, ShardedHistogram};
use crate::ws::{self, ConnectOptions, Ws};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// The relay's namespace: history streams are `relay/<room>`.
pub const NAMESPACE: &str = "relay";

/// Other programs' share of the machine during a run (percent of one core) from which the
/// run counts as disturbed.
pub const DISTURBED_PCT: f64 = 20.0;

/// Where the room lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    /// One node (history in memory).
    Single,
    /// Two nodes over one Redis (history in a Redis Stream); publisher on the first node,
    /// receivers split over both.
    Cluster,
}

impl Setup {
    /// `single node` / `2 nodes + Redis`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Single => "single node",
            Self::Cluster => "2 nodes + Redis",
        }
    }

    /// Number of nodes.
    pub fn nodes(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Cluster => 2,
        }
    }
}

fn mode(history: bool) -> &'static str {
    if history {
        "on"
    } else {
        "off"
    }
}

/// The nodes of one run, as the load generator sees them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Node URLs (`ws://…`); the publisher connects to the first.
    pub urls: Vec<String>,
    /// Processes whose CPU time is the nodes' (empty: not measured).
    pub server_pids: Vec<u32>,
    /// The Redis process, when there is one to measure.
    pub broker_pid: Option<u32>,
}

/// Starts and stops the nodes of each run.
pub trait Nodes {
    /// What [`Nodes::stop`] needs to stop the nodes again.
    type Running: Send;

    /// Starts `setup` with the relay's history on or off; `name` is unique per run (use it
    /// in node names). Returns once every node accepts connections.
    fn start(
        &mut self,
        setup: Setup,
        history: bool,
        name: &str,
    ) -> impl Future<Output = Result<(Endpoints, Self::Running)>> + Send;

    /// Stops the nodes of a run.
    fn stop(&mut self, running: Self::Running) -> impl Future<Output = ()> + Send;
}

/// The load of every run and how many rounds to make.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryParams {
    /// Setups measured, each with history off and on, in every round.
    pub setups: Vec<Setup>,
    /// Rounds: each runs every setup with history off and on (the order alternating).
    pub rounds: usize,
    /// Receivers in the room.
    pub receivers: usize,
    /// Messages per second from the publisher.
    pub rate: f64,
    /// Size of each message's data in bytes.
    pub size: usize,
    /// How long the publisher sends.
    pub duration: Duration,
    /// How long to wait for outstanding deliveries after the last send.
    pub drain_timeout: Duration,
    /// Pause between the last join and the first message (lets a node without history
    /// subscribe to the room's channel, which a plain join does not wait for).
    pub settle: Duration,
    /// Connection attempts (and joins) in flight at once.
    pub connect_concurrency: usize,
    /// How many times a run is made again when other programs used [`DISTURBED_PCT`] or more
    /// of a core during it (the disturbed run is kept in [`Comparison::discarded`]).
    pub retries: usize,
    /// Before each run, wait up to this long for the machine to be idle (other programs
    /// below 30% of a core over a second); zero: do not wait.
    pub quiet_wait: Duration,
}

/// How the receivers' join replies looked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Joins {
    /// `{"ok":true,"stream":"relay/<room>",…,"recovered":false}`.
    pub positioned: u64,
    /// `{"ok":true}` with no stream.
    pub plain: u64,
    /// Anything else.
    pub other: u64,
    /// The first reply counted in `other`.
    pub other_example: Option<String>,
}

impl Joins {
    /// Classifies one join reply frame for the room whose stream is `stream`.
    pub fn observe(&mut self, reply: &str, stream: &str) {
        let ok = reply.contains(r#""ok":true"#);
        let named = reply.contains(&format!(r#""stream":"{stream}""#));
        if ok && named && reply.contains(r#""recovered":false"#) {
            self.positioned += 1;
        } else if ok && !reply.contains(r#""stream""#) && !reply.contains(r#""recovered""#) {
            self.plain += 1;
        } else {
            self.other += 1;
            self.other_example.get_or_insert_with(|| reply.to_string());
        }
    }
}

/// What the receivers found about the stream positions of the `msg` events they got (every
/// stamped frame, duplicates included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Positions {
    /// Frames with `stream`, `offset` and `epoch`.
    pub positioned: u64,
    /// Frames with none of them.
    pub unpositioned: u64,
    /// Frames with some of them only, or a value of the wrong form.
    pub partial: u64,
    /// Positioned frames naming another stream than `relay/<room>`.
    pub wrong_stream: u64,
    /// Positioned frames whose offset is not their sequence number + 1 (offsets of a fresh
    /// stream start at 1; the publisher numbers from 0).
    pub offset_not_seq: u64,
    /// Positioned frames whose offset does not follow the receiver's previous one.
    pub gaps: u64,
    /// Positioned frames whose epoch differs from the receiver's first.
    pub epoch_changes: u64,
}

impl Positions {
    fn add(&mut self, o: &Positions) {
        self.positioned += o.positioned;
        self.unpositioned += o.unpositioned;
        self.partial += o.partial;
        self.wrong_stream += o.wrong_stream;
        self.offset_not_seq += o.offset_not_seq;
        self.gaps += o.gaps;
        self.epoch_changes += o.epoch_changes;
    }
}

/// The stream position fields found in a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePosition<'a> {
    /// No `stream`, `offset` or `epoch`.
    Absent,
    /// Some of them, or a value of the wrong form.
    Partial,
    /// All three.
    Present {
        /// `stream`.
        stream: &'a str,
        /// `offset`.
        offset: u64,
        /// `epoch`.
        epoch: &'a str,
    },
}

/// What follows the last `key` in `frame` (the fields come after the payload, and a stamped
/// payload has no quotes, so the last occurrence is the field).
fn after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    frame.rfind(key).map(|i| &frame[i + key.len()..])
}

fn string_value(rest: &str) -> Option<&str> {
    let rest = rest.strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

fn number_value(rest: &str) -> Option<u64> {
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if !matches!(rest[end..].chars().next(), Some(',' | '}')) {
        return None;
    }
    rest[..end].parse().ok()
}

/// Finds the position fields of `frame` without parsing its JSON.
pub fn position_of(frame: &str) -> FramePosition<'_> {
    let stream = after(frame, r#""stream":"#);
    let offset = after(frame, r#""offset":"#);
    let epoch = after(frame, r#""epoch":"#);
    if stream.is_none() && offset.is_none() && epoch.is_none() {
        return FramePosition::Absent;
    }
    match (
        stream.and_then(string_value),
        offset.and_then(number_value),
        epoch.and_then(string_value),
    ) {
        (Some(stream), Some(offset), Some(epoch)) => FramePosition::Present {
            stream,
            offset,
            epoch,
        },
        _ => FramePosition::Partial,
    }
}

/// One receiver's position bookkeeping.
#[derive(Debug)]
struct PositionCheck {
    stream: Arc<str>,
    counts: Positions,
    last_offset: Option<u64>,
    epoch: Option<String>,
}

impl PositionCheck {
    fn new(stream: Arc<str>) -> Self {
        Self {
            stream,
            counts: Positions::default(),
            last_offset: None,
            epoch: None,
        }
    }

    fn observe(&mut self, frame: &str, seq: u64) {
        let c = &mut self.counts;
        match position_of(frame) {
            FramePosition::Absent => c.unpositioned += 1,
            FramePosition::Partial => c.partial += 1,
            FramePosition::Present {
                stream,
                offset,
                epoch,
            } => {
                c.positioned += 1;
                if stream != &*self.stream {
                    c.wrong_stream += 1;
                }
                if offset != seq + 1 {
                    c.offset_not_seq += 1;
                }
                if self.last_offset.is_some_and(|last| offset != last + 1) {
                    c.gaps += 1;
                }
                self.last_offset = Some(offset);
                match &self.epoch {
                    None => self.epoch = Some(epoch.to_string()),
                    Some(first) if first != epoch => c.epoch_changes += 1,
                    Some(_) => {}
                }
            }
        }
    }
}

/// What one receiver saw.
struct Checked {
    result: ReceiverResult,
    positions: Positions,
    epoch: Option<String>,
}

/// [`common::receive`] that also checks the stream position of every stamped frame.
async fn receive_checked(
    conn: Ws,
    key: usize,
    limit: u64,
    hist: Arc<ShardedHistogram>,
    shared: Arc<Shared>,
    stream: Arc<str>,
    stop: watch::Receiver<bool>,
) -> Checked {
    let mut check = PositionCheck::new(stream);
    let observe = |text: &str, seq: u64| check.observe(text, seq);
    let result = common::receive_observing(conn, key, limit, hist, shared, stop, observe).await;
    Checked {
        result,
        positions: check.counts,
        epoch: check.epoch,
    }
}

/// Joins `room` and returns the reply frame.
async fn join_reply(conn: &mut Ws, room: &str) -> Result<String> {
    conn.send_text(stamp::join_frame(room, "join"))
        .await
        .context("sending join")?;
    let mut reply = String::new();
    ws::wait_for_text(conn, |t| {
        let is_reply = t.contains(r#""callbackId":"join""#);
        if is_reply {
            reply = t.to_string();
        }
        is_reply
    })
    .await?;
    Ok(reply)
}

/// Joins every connection to `room` (at most `concurrency` at a time), classifying replies.
async fn join_all(
    conns: Vec<Ws>,
    room: &str,
    stream: &str,
    concurrency: usize,
) -> Result<(Vec<Ws>, Joins)> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (sem, room) = (sem.clone(), room.to_string());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let reply = join_reply(&mut conn, &room).await?;
                anyhow::Ok((conn, reply))
            })
        })
        .collect();
    let mut joined = Vec::with_capacity(handles.len());
    let mut joins = Joins::default();
    let mut first_err = None;
    for h in handles {
        match h.await.map_err(|e| anyhow!("join task failed: {e}")) {
            Ok(Ok((conn, reply))) => {
                joins.observe(&reply, stream);
                joined.push(conn);
            }
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for c in joined {
            ws::close(c).await;
        }
        return Err(e.context(format!("joining {room}")));
    }
    Ok((joined, joins))
}

/// One measured run: a setup with history on or off, fresh nodes.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Round number (from 1).
    pub round: usize,
    /// Setup.
    pub setup: Setup,
    /// History on.
    pub history: bool,
    /// The room (unique per run).
    pub room: String,
    /// Node URLs (publisher's first).
    pub nodes: Vec<String>,
    /// Receivers per node, in the order of `nodes`.
    pub receivers_per_node: Vec<usize>,
    /// Messages sent.
    pub sent: u64,
    /// Publisher ticks skipped because it was late.
    pub skipped_ticks: u64,
    /// Why the publisher stopped early, if it did.
    pub send_error: Option<String>,
    /// sent × receivers.
    pub expected: u64,
    /// Unique deliveries.
    pub delivered: u64,
    /// expected − delivered.
    pub lost: u64,
    /// Extra copies.
    pub duplicates: u64,
    /// Deliveries after a higher sequence number.
    pub out_of_order: u64,
    /// Impossible sequence numbers.
    pub invalid: u64,
    /// Receivers whose connection ended early.
    pub disconnected: u64,
    /// Whether every delivery arrived within the drain timeout.
    pub complete: bool,
    /// The join replies.
    pub joins: Joins,
    /// The positions of the deliveries.
    pub positions: Positions,
    /// Distinct epochs the receivers saw (first of each receiver).
    pub epochs: Vec<String>,
    /// Latency from the send stamp, µs.
    pub latency: LatencySummary,
    /// CPU time of the nodes in the measured window.
    pub server: Option<Usage>,
    /// CPU time of the redis-server in the measured window.
    pub broker: Option<Usage>,
    /// The load generator's CPU time.
    pub client: Option<Usage>,
    /// The whole machine (`other_pct`: neither nodes, Redis, nor the generator).
    pub machine: Option<MachineUsage>,
    /// Bytes the receivers read while receiving.
    pub wire_read: u64,
    #[serde(skip)]
    hist: Histogram<u64>,
}

impl RunOutcome {
    /// `round 1, single node, history on`.
    pub fn label(&self) -> String {
        format!(
            "round {}, {}, history {}",
            self.round,
            self.setup.label(),
            mode(self.history)
        )
    }

    /// Nodes' CPU time per delivery, µs.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        self.server.as_ref().and_then(|u| u.cpu_us_per_op)
    }

    /// Everything that went against the contract in this run.
    pub fn problems(&self, receivers: usize) -> Vec<String> {
        let mut p = Vec::new();
        let receivers = receivers as u64;
        if self.sent == 0 {
            p.push("nothing was sent".to_string());
        }
        if let Some(e) = &self.send_error {
            p.push(format!("the publisher stopped: {e}"));
        }
        if !self.complete || self.lost > 0 {
            p.push(format!(
                "{} of {} deliveries arrived ({} lost)",
                self.delivered, self.expected, self.lost
            ));
        }
        for (what, n) in [
            ("duplicates", self.duplicates),
            ("out-of-order deliveries", self.out_of_order),
            ("invalid stamps", self.invalid),
            ("disconnected receivers", self.disconnected),
        ] {
            if n > 0 {
                p.push(format!("{n} {what}"));
            }
        }
        let j = &self.joins;
        let want = if self.history {
            ("positioned", j.positioned)
        } else {
            ("plain", j.plain)
        };
        if want.1 != receivers {
            p.push(format!(
                "{} of {receivers} join replies {} ({} positioned, {} plain, {} other, e.g. {:?})",
                want.1, want.0, j.positioned, j.plain, j.other, j.other_example
            ));
        }
        let pos = &self.positions;
        let frames = self.delivered + self.duplicates;
        if self.history {
            if pos.positioned != frames {
                p.push(format!(
                    "{} of {frames} messages positioned ({} without a position, {} partial)",
                    pos.positioned, pos.unpositioned, pos.partial
                ));
            }
            for (what, n) in [
                ("naming another stream", pos.wrong_stream),
                (
                    "with an offset other than their number + 1",
                    pos.offset_not_seq,
                ),
                ("not following the previous offset", pos.gaps),
                (
                    "with another epoch than the receiver's first",
                    pos.epoch_changes,
                ),
            ] {
                if n > 0 {
                    p.push(format!("{n} messages {what}"));
                }
            }
            if self.epochs.len() != 1 {
                p.push(format!("the receivers saw epochs {:?}", self.epochs));
            }
        } else if pos.positioned + pos.partial > 0 || pos.unpositioned != frames {
            p.push(format!(
                "history off, yet {} messages positioned and {} partly ({} of {frames} without)",
                pos.positioned, pos.partial, pos.unpositioned
            ));
        }
        p
    }
}

fn settings_for(endpoints: &Endpoints, run_id: &str, concurrency: usize) -> Settings {
    Settings {
        url: endpoints.urls[0].clone(),
        urls: if endpoints.urls.len() > 1 {
            endpoints.urls.clone()
        } else {
            Vec::new()
        },
        server_pids: endpoints.server_pids.clone(),
        connect_concurrency: concurrency,
        run_id: run_id.to_string(),
        connect: ConnectOptions::default(),
        padding: Padding::X,
    }
}

/// Runs the fan-out once against `endpoints`.
pub async fn run_once(
    endpoints: &Endpoints,
    p: &HistoryParams,
    round: usize,
    setup: Setup,
    history: bool,
) -> Result<RunOutcome> {
    if p.receivers == 0 || p.rate <= 0.0 || endpoints.urls.is_empty() {
        bail!("a run needs nodes, receivers and a positive rate");
    }
    let run_id = common::new_run_id();
    let settings = settings_for(endpoints, &run_id, p.connect_concurrency);
    common::probe(&settings).await?;
    let room = format!("hist-{run_id}");
    let stream: Arc<str> = Arc::from(format!("{NAMESPACE}/{room}"));
    let conns = common::connect_all(&settings, p.receivers, "r", None)
        .await
        .context("connecting receivers")?;
    let (conns, joins) = join_all(conns, &room, &stream, p.connect_concurrency).await?;
    tokio::time::sleep(p.settle).await;

    let planned = (p.rate * p.duration.as_secs_f64()).ceil() as u64;
    let (per_tick, period) = fanout::schedule(p.rate);
    let job = Job::Rate {
        per_tick,
        period,
        duration: p.duration,
    };
    let publisher = Publisher::connect(&settings, &format!("{run_id}-pub"), &room, p.size, job)
        .await
        .context("connecting the publisher")?;
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hist = Arc::new(ShardedHistogram::new(workers * 8));
    let limit = planned + 1024;
    let receivers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(receive_checked(
                c,
                i,
                limit,
                hist.clone(),
                shared.clone(),
                stream.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let meter = Meter::start(&settings.server_pids).context("sampling the nodes")?;
    let broker_pids: Vec<u32> = endpoints.broker_pid.into_iter().collect();
    let broker_before = procfs::sample_all(&broker_pids).context("sampling redis-server")?;
    let outcome = publisher.run().await;
    let expected = outcome.sent * p.receivers as u64;
    let drain = p.drain_timeout;
    let complete =
        common::wait_deliveries(&shared, expected, drain, drain.min(Duration::from_secs(3))).await;
    let delivered_now = shared.delivered();
    let secs = meter.elapsed_secs();
    let broker_after = procfs::sample_all(&broker_pids);
    let mut measured = meter.finish(delivered_now);
    let broker = match broker_after {
        Ok(after) if !broker_pids.is_empty() => Some(Usage::between(
            &broker_before,
            &after,
            secs,
            delivered_now,
            procfs::clock_ticks_per_second(),
        )),
        _ => None,
    };
    if let (Some(m), Some(b)) = (measured.machine.as_mut(), broker.as_ref()) {
        m.other_pct = (m.other_pct - b.cpu_pct).max(0.0);
    }
    let disconnected = shared
        .disconnected
        .load(std::sync::atomic::Ordering::Relaxed);

    let _ = stop.send(true);
    let mut unique = 0;
    let (mut duplicates, mut out_of_order, mut invalid) = (0, 0, 0);
    let mut positions = Positions::default();
    let mut epochs: Vec<String> = Vec::new();
    for h in receivers {
        let c = h.await.map_err(|e| anyhow!("receiver task failed: {e}"))?;
        unique += c.result.tracker.unique;
        duplicates += c.result.tracker.duplicates;
        out_of_order += c.result.tracker.out_of_order;
        invalid += c.result.tracker.invalid;
        positions.add(&c.positions);
        if let Some(e) = c.epoch {
            if !epochs.contains(&e) {
                epochs.push(e);
            }
        }
    }
    let wire_read = shared.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
    let merged = hist.merged();
    let nodes = settings.all_urls();
    let receivers_per_node = nodes
        .iter()
        .map(|url| {
            (0..p.receivers)
                .filter(|&i| settings.url_for(i) == url)
                .count()
        })
        .collect();
    Ok(RunOutcome {
        round,
        setup,
        history,
        room,
        nodes,
        receivers_per_node,
        sent: outcome.sent,
        skipped_ticks: outcome.skipped_ticks,
        send_error: outcome.error,
        expected,
        delivered: unique,
        lost: expected.saturating_sub(unique),
        duplicates,
        out_of_order,
        invalid,
        disconnected,
        complete,
        joins,
        positions,
        epochs,
        latency: LatencySummary::from_histogram(&merged),
        server: measured.server,
        broker,
        client: measured.client,
        machine: measured.machine,
        wire_read,
        hist: merged,
    })
}

/// One setup with history on or off, over every round.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRow {
    /// Setup.
    pub setup: Setup,
    /// History on.
    pub history: bool,
    /// Runs (rounds).
    pub runs: usize,
    /// Messages sent, all rounds.
    pub sent: u64,
    /// Unique deliveries, all rounds.
    pub delivered: u64,
    /// Lost deliveries, all rounds.
    pub lost: u64,
    /// Duplicates, all rounds.
    pub duplicates: u64,
    /// Publisher ticks skipped, all rounds.
    pub skipped_ticks: u64,
    /// Nodes' CPU time per delivery over all rounds (total CPU / total deliveries), µs.
    pub server_us_per_delivery: Option<f64>,
    /// The same per round.
    pub server_us_per_delivery_rounds: Vec<f64>,
    /// Mean CPU utilisation of the nodes (percent of one core, nodes together).
    pub server_cpu_pct: Option<f64>,
    /// redis-server's CPU time per delivery over all rounds, µs.
    pub broker_us_per_delivery: Option<f64>,
    /// redis-server's CPU time per message sent over all rounds, µs.
    pub broker_us_per_message: Option<f64>,
    /// Latency of all rounds' deliveries together, µs.
    pub latency: LatencySummary,
    /// p99 of each round, µs.
    pub p99_rounds_us: Vec<u64>,
    /// Bytes the receivers read per delivery.
    pub bytes_per_delivery: Option<f64>,
    /// Mean CPU utilisation of the load generator (percent of one core).
    pub client_cpu_pct: Option<f64>,
    /// Highest share of the machine other programs used in a round (percent of one core).
    pub other_pct_max: Option<f64>,
}

fn per(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    per(sum, n)
}

impl ModeRow {
    /// Sums up `runs` (of one setup and mode).
    pub fn of(setup: Setup, history: bool, runs: &[&RunOutcome]) -> Self {
        let delivered: u64 = runs.iter().map(|r| r.delivered).sum();
        let sent: u64 = runs.iter().map(|r| r.sent).sum();
        let cpu_ms = |u: fn(&RunOutcome) -> Option<&Usage>| -> Option<f64> {
            let all: Option<Vec<f64>> = runs.iter().map(|r| u(r).map(|u| u.cpu_ms)).collect();
            all.filter(|v| !v.is_empty()).map(|v| v.iter().sum())
        };
        let server_ms = cpu_ms(|r| r.server.as_ref());
        let broker_ms = cpu_ms(|r| r.broker.as_ref());
        let mut hist = stats::new_histogram();
        for r in runs {
            let _ = hist.add(&r.hist);
        }
        Self {
            setup,
            history,
            runs: runs.len(),
            sent,
            delivered,
            lost: runs.iter().map(|r| r.lost).sum(),
            duplicates: runs.iter().map(|r| r.duplicates).sum(),
            skipped_ticks: runs.iter().map(|r| r.skipped_ticks).sum(),
            server_us_per_delivery: server_ms.and_then(|ms| per(ms * 1000.0, delivered)),
            server_us_per_delivery_rounds: runs
                .iter()
                .filter_map(|r| r.server_us_per_delivery())
                .collect(),
            server_cpu_pct: mean(
                runs.iter()
                    .filter_map(|r| r.server.as_ref())
                    .map(|u| u.cpu_pct),
            ),
            broker_us_per_delivery: broker_ms.and_then(|ms| per(ms * 1000.0, delivered)),
            broker_us_per_message: broker_ms.and_then(|ms| per(ms * 1000.0, sent)),
            latency: LatencySummary::from_histogram(&hist),
            p99_rounds_us: runs.iter().map(|r| r.latency.p99_us).collect(),
            bytes_per_delivery: per(
                runs.iter().map(|r| r.wire_read).sum::<u64>() as f64,
                delivered,
            ),
            client_cpu_pct: mean(
                runs.iter()
                    .filter_map(|r| r.client.as_ref())
                    .map(|u| u.cpu_pct),
            ),
            other_pct_max: runs
                .iter()
                .filter_map(|r| r.machine.map(|m| m.other_pct))
                .reduce(f64::max),
        }
    }
}

/// History on against off for one setup: each figure's ratio on / off.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Setup.
    pub setup: Setup,
    /// Nodes' CPU per delivery (all rounds' CPU time over all rounds' deliveries, on / off).
    pub server_cpu: Option<f64>,
    /// Nodes' CPU per delivery, on / off, of each round (the two runs of a round are back to
    /// back, so slow drifts of the machine cancel out).
    pub server_cpu_rounds: Vec<f64>,
    /// Geometric mean of `server_cpu_rounds`.
    pub server_cpu_paired: Option<f64>,
    /// Latency p50.
    pub p50: Option<f64>,
    /// Latency p99.
    pub p99: Option<f64>,
    /// Bytes per delivery.
    pub bytes: Option<f64>,
    /// redis-server's CPU per delivery.
    pub broker_cpu: Option<f64>,
}

fn ratio(on: Option<f64>, off: Option<f64>) -> Option<f64> {
    match (on, off) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Ratio {
    /// `on` / `off`; `runs` (of any setup) give the per-round ratios.
    pub fn of(on: &ModeRow, off: &ModeRow, runs: &[RunOutcome]) -> Self {
        let us = |v: u64| Some(v as f64);
        let cpu = |round: usize, history: bool| {
            runs.iter()
                .find(|r| r.round == round && r.setup == on.setup && r.history == history)
                .and_then(RunOutcome::server_us_per_delivery)
        };
        let rounds: Vec<usize> = runs.iter().map(|r| r.round).collect();
        let (first, last) = (rounds.iter().min(), rounds.iter().max());
        let server_cpu_rounds: Vec<f64> = match (first, last) {
            (Some(&a), Some(&b)) => (a..=b)
                .filter_map(|round| ratio(cpu(round, true), cpu(round, false)))
                .collect(),
            _ => Vec::new(),
        };
        let server_cpu_paired = mean(server_cpu_rounds.iter().map(|r| r.ln())).map(f64::exp);
        Self {
            setup: on.setup,
            server_cpu: ratio(on.server_us_per_delivery, off.server_us_per_delivery),
            server_cpu_rounds,
            server_cpu_paired,
            p50: ratio(us(on.latency.p50_us), us(off.latency.p50_us)),
            p99: ratio(us(on.latency.p99_us), us(off.latency.p99_us)),
            bytes: ratio(on.bytes_per_delivery, off.bytes_per_delivery),
            broker_cpu: ratio(on.broker_us_per_delivery, off.broker_us_per_delivery),
        }
    }
}

/// Every run of a comparison, and per setup the rows (off, on) and their ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The load.
    pub params: HistoryParams,
    /// Every run, in the order they ran.
    pub runs: Vec<RunOutcome>,
    /// Per setup: history off, then on.
    pub rows: Vec<ModeRow>,
    /// Per setup: on / off.
    pub ratios: Vec<Ratio>,
    /// Runs made again because other programs used the machine meanwhile (see
    /// [`HistoryParams::retries`]); not in the rows.
    pub discarded: Vec<RunOutcome>,
}

impl Comparison {
    /// Builds the rows and ratios from the runs.
    pub fn new(params: HistoryParams, runs: Vec<RunOutcome>, discarded: Vec<RunOutcome>) -> Self {
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        for &setup in &params.setups {
            let of = |history: bool| {
                let runs: Vec<&RunOutcome> = runs
                    .iter()
                    .filter(|r| r.setup == setup && r.history == history)
                    .collect();
                ModeRow::of(setup, history, &runs)
            };
            let (off, on) = (of(false), of(true));
            ratios.push(Ratio::of(&on, &off, &runs));
            rows.push(off);
            rows.push(on);
        }
        Self {
            params,
            runs,
            rows,
            ratios,
            discarded,
        }
    }

    /// The row of `setup` with history on or off.
    pub fn row(&self, setup: Setup, history: bool) -> Option<&ModeRow> {
        self.rows
            .iter()
            .find(|r| r.setup == setup && r.history == history)
    }

    /// The ratio of `setup`.
    pub fn ratio(&self, setup: Setup) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.setup == setup)
    }

    /// Every run's problems (discarded runs' included), prefixed by the run.
    pub fn problems(&self) -> Vec<String> {
        self.runs
            .iter()
            .chain(&self.discarded)
            .flat_map(|r| {
                let label = r.label();
                r.problems(self.params.receivers)
                    .into_iter()
                    .map(move |p| format!("{label}: {p}"))
            })
            .collect()
    }

    fn load_line(&self) -> String {
        let p = &self.params;
        format!(
            "{} receivers × {} msg/s × {} B for {:.1} s, {} rounds (history off then on in odd \
             rounds, on then off in even ones)",
            p.receivers,
            p.rate,
            p.size,
            p.duration.as_secs_f64(),
            p.rounds
        )
    }

    /// The human-readable summary.
    pub fn human(&self) -> String {
        let mut s = format!("== history ==\n  load         {}\n", self.load_line());
        for row in &self.rows {
            let _ = writeln!(
                s,
                "  {:16} history {:3}: {} deliveries ({} lost, {} dup), nodes {} µs/delivery \
                 (rounds {}; {} of a core){}, latency p50 {} ms p99 {} ms (rounds {} ms), {} \
                 B/delivery, generator {} of a core, {} ticks skipped",
                row.setup.label(),
                mode(row.history),
                report::group(row.delivered),
                row.lost,
                row.duplicates,
                opt(row.server_us_per_delivery, 3),
                join_f(&row.server_us_per_delivery_rounds, 3),
                row.server_cpu_pct
                    .map_or("–".into(), |v| format!("{v:.0}%")),
                row.broker_us_per_delivery
                    .map(|v| format!(", redis {v:.3} µs/delivery"))
                    .unwrap_or_default(),
                report::ms(row.latency.p50_us),
                report::ms(row.latency.p99_us),
                row.p99_rounds_us
                    .iter()
                    .map(|&v| report::ms(v))
                    .collect::<Vec<_>>()
                    .join(", "),
                opt(row.bytes_per_delivery, 1),
                row.client_cpu_pct
                    .map_or("–".into(), |v| format!("{v:.0}%")),
                row.skipped_ticks,
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "  {:16} on / off   : nodes' CPU per delivery {} (per round {}; geometric mean \
                 {}), p50 {}, p99 {}, bytes {}{}",
                r.setup.label(),
                times(r.server_cpu),
                join_f(&r.server_cpu_rounds, 3),
                times(r.server_cpu_paired),
                times(r.p50),
                times(r.p99),
                times(r.bytes),
                r.broker_cpu
                    .map(|v| format!(", redis CPU {v:.2}×"))
                    .unwrap_or_default()
            );
        }
        let others: Vec<f64> = self.rows.iter().filter_map(|r| r.other_pct_max).collect();
        if let Some(max) = others.into_iter().reduce(f64::max) {
            let _ = writeln!(
                s,
                "  machine      other programs at most {max:.0}% of a core in a run{}",
                if max >= 20.0 {
                    " — results disturbed by other load"
                } else {
                    ""
                }
            );
        }
        if !self.discarded.is_empty() {
            let _ = writeln!(
                s,
                "  discarded    {} runs disturbed by other programs (made again): {}",
                self.discarded.len(),
                self.discarded
                    .iter()
                    .map(RunOutcome::label)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        for p in self.problems() {
            let _ = writeln!(s, "  PROBLEM      {p}");
        }
        s
    }

    /// The markdown table of docs/BENCHMARKS.md: per setup, history off, on, and on / off.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| setup | history | deliveries (lost / dup) | nodes' CPU per delivery, all rounds (per round) | Redis CPU per delivery | latency p50 / p99, all rounds | p99 per round | bytes per delivery |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for &setup in &self.params.setups {
            for history in [false, true] {
                let Some(r) = self.row(setup, history) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({} / {}) | {} µs ({}) | {} | {} / {} ms | {} ms | {} B |",
                    setup.label(),
                    mode(history),
                    report::group(r.delivered),
                    r.lost,
                    r.duplicates,
                    opt(r.server_us_per_delivery, 3),
                    join_f(&r.server_us_per_delivery_rounds, 3),
                    match (r.broker_us_per_delivery, r.broker_us_per_message) {
                        (Some(d), Some(m)) => format!("{d:.3} µs ({m:.0} µs per message)"),
                        _ => "–".into(),
                    },
                    report::ms(r.latency.p50_us),
                    report::ms(r.latency.p99_us),
                    r.p99_rounds_us
                        .iter()
                        .map(|&v| report::ms(v))
                        .collect::<Vec<_>>()
                        .join(", "),
                    opt(r.bytes_per_delivery, 1),
                );
            }
            if let Some(r) = self.ratio(setup) {
                let _ = writeln!(
                    s,
                    "| {} | **on / off** | | **{}** (per round {}; geometric mean {}) | {} | {} / **{}** | | {} |",
                    setup.label(),
                    times(r.server_cpu),
                    join_f(&r.server_cpu_rounds, 3),
                    times(r.server_cpu_paired),
                    times(r.broker_cpu),
                    times(r.p50),
                    times(r.p99),
                    times(r.bytes),
                );
            }
        }
        s
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn join_f(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn times(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}×"))
}

/// Waits up to `limit` for a second in which the machine's busy time stays below 30% of a
/// core; returns whether it came.
pub async fn wait_quiet(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let tps = procfs::clock_ticks_per_second() as f64;
    while Instant::now() < deadline {
        let (Ok(before), started) = (procfs::sample_machine(), Instant::now()) else {
            return false;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(after) = procfs::sample_machine() else {
            return false;
        };
        let busy_pct = after.busy.saturating_sub(before.busy) as f64 * 100.0
            / tps
            / started.elapsed().as_secs_f64();
        if busy_pct < 30.0 {
            return true;
        }
    }
    false
}

/// Runs every round: in each, every setup with history off and on (off first in odd rounds,
/// on first in even ones), each run on nodes started for it and stopped after it. A line per
/// run goes to stderr.
pub async fn compare<N: Nodes>(nodes: &mut N, params: &HistoryParams) -> Result<Comparison> {
    if params.rounds == 0 || params.setups.is_empty() {
        bail!("nothing to compare: give at least one round and one setup");
    }
    let (mut runs, mut discarded) = (Vec::new(), Vec::new());
    let mut n = 0;
    for round in 1..=params.rounds {
        for &setup in &params.setups {
            let order = if round % 2 == 1 {
                [false, true]
            } else {
                [true, false]
            };
            for history in order {
                for attempt in 0..=params.retries {
                    n += 1;
                    let run = run_fresh(nodes, params, n, round, setup, history).await?;
                    let other = run.machine.map_or(0.0, |m| m.other_pct);
                    let again = other >= DISTURBED_PCT && attempt < params.retries;
                    eprintln!(
                        "{}: {} of {} delivered, nodes {} µs/delivery, p50 {} ms, p99 {} ms, \
                         other programs {other:.0}%{}",
                        run.label(),
                        report::group(run.delivered),
                        report::group(run.expected),
                        opt(run.server_us_per_delivery(), 3),
                        report::ms(run.latency.p50_us),
                        report::ms(run.latency.p99_us),
                        if again {
                            " — disturbed, run again"
                        } else {
                            ""
                        }
                    );
                    if again {
                        discarded.push(run);
                    } else {
                        runs.push(run);
                        break;
                    }
                }
            }
        }
    }
    Ok(Comparison::new(params.clone(), runs, discarded))
}

/// Run number `n` on nodes started for it (after waiting for a quiet machine).
async fn run_fresh<N: Nodes>(
    nodes: &mut N,
    params: &HistoryParams,
    n: usize,
    round: usize,
    setup: Setup,
    history: bool,
) -> Result<RunOutcome> {
    if !params.quiet_wait.is_zero() && !wait_quiet(params.quiet_wait).await {
        eprintln!(
            "warning: the machine is still busy after {:?}; run {n} may be disturbed",
            params.quiet_wait
        );
    }
    let (endpoints, running) = nodes
        .start(setup, history, &format!("h{n}"))
        .await
        .with_context(|| format!("starting {} for run {n}", setup.label()))?;
    let run = run_once(&endpoints, params, round, setup, history).await;
    nodes.stop(running).await;
    run.with_context(|| {
        format!(
            "round {round}, {}, history {}",
            setup.label(),
            mode(history)
        )
    })
}

// ----- processes -----

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    what: String,
}

impl Spawned {
    /// Runs `program args`, pinned to `cpus` with `taskset -c` when given (taskset execs the
    /// program, so the pid stays the program's). Output goes to `log`.
    fn spawn(
        program: &std::path::Path,
        args: &[String],
        cpus: Option<&str>,
        log: &std::path::Path,
        what: String,
    ) -> Result<Self> {
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // A CROSSWIRE_* variable of the caller's (CROSSWIRE_HISTORY, CROSSWIRE_THREADS, …)
        // must not change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CROSSWIRE_") {
                command.env_remove(key);
            }
        }
        let out = std::fs::File::create(log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self { child, what })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `port` on 127.0.0.1 accepts connections, failing when the process exits
    /// or `timeout` passes.
    async fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status})", self.what);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} does not listen on port {port} after {timeout:?}",
                    self.what
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` on a free loopback port, with nothing written to disk, stopped when
/// dropped.
#[derive(Debug)]
pub struct RedisProcess {
    process: Spawned,
    port: u16,
}

impl RedisProcess {
    /// Starts `program` (e.g. `redis-server`), pinned to `cpus` when given, logging to `log`,
    /// and waits until it answers PING.
    pub async fn start(
        program: &std::path::Path,
        cpus: Option<&str>,
        log: &std::path::Path,
    ) -> Result<Self> {
        let port = crosswire_testkit::free_port()?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut process = Spawned::spawn(program, &args, cpus, log, "redis-server".into())?;
        process.wait_port(port, Duration::from_secs(10)).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = ping(port) {
            if Instant::now() >= deadline {
                return Err(e.context("redis-server does not answer PING"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { process, port })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

fn ping(port: u16) -> Result<()> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf != b"+PONG\r\n" {
        bail!("unexpected answer {:?}", String::from_utf8_lossy(&buf));
    }
    Ok(())
}

/// Runs every node as a `crosswire serve` process (`--threads`, pinned when asked), the
/// cluster's over one `redis-server` started on first use and kept for the whole comparison.
#[derive(Debug)]
pub struct ProcessNodes {
    /// The `crosswire` binary.
    pub crosswire: PathBuf,
    /// The `redis-server` binary.
    pub redis_server: PathBuf,
    /// `--threads` of every node.
    pub node_threads: usize,
    /// `--history-size` with history on.
    pub history_size: usize,
    /// `--history-ttl` with history on, seconds.
    pub history_ttl: u64,
    /// CPUs (a `taskset -c` list) for the nodes and redis-server; `None`: not pinned.
    pub server_cpus: Option<String>,
    /// Directory of the processes' logs.
    pub log_dir: PathBuf,
    redis: Option<RedisProcess>,
}

impl ProcessNodes {
    /// Nodes run from `crosswire`, logs in a fresh directory under the temporary one.
    pub fn new(crosswire: PathBuf, redis_server: PathBuf) -> Result<Self> {
        let log_dir =
            std::env::temp_dir().join(format!("crosswire-bench-history-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(Self {
            crosswire,
            redis_server,
            node_threads: 1,
            history_size: 100,
            history_ttl: 120,
            server_cpus: None,
            log_dir,
            redis: None,
        })
    }

    async fn redis(&mut self) -> Result<(String, u32)> {
        if self.redis.is_none() {
            let log = self.log_dir.join("redis.log");
            let redis =
                RedisProcess::start(&self.redis_server, self.server_cpus.as_deref(), &log).await?;
            self.redis = Some(redis);
        }
        let r = self.redis.as_ref().expect("just started");
        Ok((r.url(), r.pid()))
    }
}

impl Nodes for ProcessNodes {
    type Running = Vec<Spawned>;

    async fn start(
        &mut self,
        setup: Setup,
        history: bool,
        name: &str,
    ) -> Result<(Endpoints, Vec<Spawned>)> {
        let redis = match setup {
            Setup::Single => None,
            Setup::Cluster => Some(self.redis().await?),
        };
        let mut processes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..setup.nodes() {
            let port = crosswire_testkit::free_port()?;
            let node = format!("{name}-{}", (b'a' + i as u8) as char);
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--port".into(),
                port.to_string(),
                "--threads".into(),
                self.node_threads.to_string(),
                "--name".into(),
                node.clone(),
            ];
            if history {
                args.extend([
                    "--history".into(),
                    "--history-size".into(),
                    self.history_size.to_string(),
                    "--history-ttl".into(),
                    self.history_ttl.to_string(),
                ]);
            }
            if let Some((url, _)) = &redis {
                args.extend(["--redis".into(), url.clone()]);
            }
            let log = self.log_dir.join(format!("{node}.log"));
            let process = Spawned::spawn(
                &self.crosswire,
                &args,
                self.server_cpus.as_deref(),
                &log,
                format!("crosswire node {node} (log {})", log.display()),
            )?;
            processes.push(process);
            ports.push(port);
        }
        for (process, &port) in processes.iter_mut().zip(&ports) {
            process.wait_port(port, Duration::from_secs(15)).await?;
        }
        let endpoints = Endpoints {
            urls: ports
                .iter()
                .map(|p| format!("ws://127.0.0.1:{p}"))
                .collect(),
            server_pids: processes.iter().map(Spawned::pid).collect(),
            broker_pid: redis.map(|(_, pid)| pid),
        };
        Ok((endpoints, processes))
    }

    async fn stop(&mut self, running: Vec<Spawned>) {
        drop(running);
    }
}

// ----- command line -----

/// `crosswire-bench history`: fan-out on a recoverable room with history on and off.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The `crosswire` binary the nodes run (`cargo build --release -p crosswire-cli`).
    #[arg(long, default_value = "target/release/crosswire")]
    pub crosswire: PathBuf,
    /// The `redis-server` binary of the cluster setup.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Setups to measure (comma-separated): `single`, `cluster`.
    #[arg(long, value_delimiter = ',', default_value = "single,cluster")]
    pub setups: Vec<Setup>,
    /// Rounds; each runs every setup with history off and on.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Receivers in the room.
    #[arg(long, default_value_t = 500)]
    pub receivers: usize,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Size of each message's data in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// How long the publisher sends in each run.
    #[arg(long, default_value = "8s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// How long to wait for stragglers after the last send.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub drain_timeout: Duration,
    /// Pause between the last join and the first message.
    #[arg(long, default_value = "500ms", value_parser = crate::parse_duration)]
    pub settle: Duration,
    /// `--threads` of every node.
    #[arg(long, default_value_t = 1)]
    pub node_threads: usize,
    /// Pin the nodes and redis-server to these CPUs (`taskset -c` list, e.g. `1`).
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// `--history-size` of the nodes with history on.
    #[arg(long, default_value_t = 100)]
    pub history_size: usize,
    /// `--history-ttl` of the nodes with history on, seconds.
    #[arg(long, default_value_t = 120)]
    pub history_ttl: u64,
    /// Connection attempts (and joins) in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Before each run, wait up to this long for the machine to be idle (other programs
    /// below 30% of a core); 0 to skip.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    pub quiet_wait: Duration,
    /// Make a run again, up to this many times, when other programs used 20% of a core or
    /// more during it.
    #[arg(long, default_value_t = 2)]
    pub retries: usize,
    /// Worker threads of the generator's runtime (default: one per core it may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the comparison as JSON instead of the summary and the markdown table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON comparison to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// Runs `crosswire-bench history`; fails (after printing the report) when a run broke the
/// contract.
pub fn main(args: HistoryArgs) -> Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("starting the tokio runtime")?;
    procfs::raise_nofile_limit(4 * args.receivers as u64 + 1024);
    let params = HistoryParams {
        setups: args.setups.clone(),
        rounds: args.rounds,
        receivers: args.receivers,
        rate: args.rate,
        size: args.size,
        duration: args.duration,
        drain_timeout: args.drain_timeout,
        settle: args.settle,
        connect_concurrency: args.connect_concurrency,
        quiet_wait: args.quiet_wait,
        retries: args.retries,
    };
    if !args.crosswire.exists() {
        bail!(
            "no crosswire binary at {} (cargo build --release -p crosswire-cli, or --crosswire)",
            args.crosswire.display()
        );
    }
    let mut nodes = ProcessNodes::new(args.crosswire.clone(), args.redis_server.clone())?;
    nodes.node_threads = args.node_threads;
    nodes.history_size = args.history_size;
    nodes.history_ttl = args.history_ttl;
    nodes.server_cpus = args.server_cpus.clone();
    eprintln!("node and redis-server logs in {}", nodes.log_dir.display());
    let result = rt.block_on(compare(&mut nodes, &params));
    drop(nodes);
    let comparison = result?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&comparison)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}\n{}", comparison.human(), comparison.markdown());
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let problems = comparison.problems();
    if !problems.is_empty() {
        bail!("{} problems (see the report)", problems.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: &str = r#"{"event":"msg","payload":"cwb1:4:99;xxxx","stream":"relay/r","offset":5,"epoch":"18f3-0"}"#;

    #[test]
    fn positions_are_found_without_parsing() {
        assert_eq!(
            position_of(ON),
            FramePosition::Present {
                stream: "relay/r",
                offset: 5,
                epoch: "18f3-0"
            }
        );
        assert_eq!(
            position_of(r#"{"event":"msg","payload":"cwb1:4:99;xxxx"}"#),
            FramePosition::Absent
        );
        for partial in [
            r#"{"event":"msg","payload":"cwb1:4:99;x","stream":"relay/r","offset":5}"#,
            r#"{"event":"msg","payload":"cwb1:4:99;x","offset":5,"epoch":"e"}"#,
            r#"{"event":"msg","payload":"cwb1:4:99;x","stream":"s","offset":"5","epoch":"e"}"#,
            r#"{"event":"msg","payload":"cwb1:4:99;x","stream":"s","offset":5.5,"epoch":"e"}"#,
            r#"{"event":"msg","payload":"cwb1:4:99;x","stream":null,"offset":5,"epoch":"e"}"#,
        ] {
            assert_eq!(position_of(partial), FramePosition::Partial, "{partial}");
        }
    }

    #[test]
    fn receivers_check_streams_offsets_and_epochs() {
        let mut c = PositionCheck::new(Arc::from("relay/r"));
        let frame = |stream: &str, offset: u64, epoch: &str| {
            format!(
                r#"{{"event":"msg","payload":"cwb1:0:1;x","stream":"{stream}","offset":{offset},"epoch":"{epoch}"}}"#
            )
        };
        c.observe(&frame("relay/r", 1, "e"), 0);
        c.observe(&frame("relay/r", 2, "e"), 1);
        assert_eq!(
            c.counts,
            Positions {
                positioned: 2,
                ..Positions::default()
            }
        );
        c.observe(&frame("relay/r", 4, "e"), 3); // a gap: 3 is missing
        c.observe(&frame("relay/x", 5, "f"), 5); // offset 5 for message 5; other stream, epoch
        c.observe(r#"{"event":"msg","payload":"cwb1:6:1;x"}"#, 6);
        assert_eq!(
            c.counts,
            Positions {
                positioned: 4,
                unpositioned: 1,
                wrong_stream: 1,
                offset_not_seq: 1,
                gaps: 1,
                epoch_changes: 1,
                ..Positions::default()
            }
        );
        assert_eq!(c.epoch.as_deref(), Some("e"));
    }

    #[test]
    fn join_replies_are_classified() {
        let mut j = Joins::default();
        j.observe(
            r#"{"callbackId":"join","payload":{"ok":true,"stream":"relay/r","recovered":false}}"#,
            "relay/r",
        );
        j.observe(
            r#"{"callbackId":"join","payload":{"ok":true,"stream":"relay/r","offset":0,"epoch":"e","recovered":false}}"#,
            "relay/r",
        );
        j.observe(r#"{"callbackId":"join","payload":{"ok":true}}"#, "relay/r");
        j.observe(
            r#"{"callbackId":"join","payload":{"ok":true,"stream":"relay/q","recovered":false}}"#,
            "relay/r",
        );
        assert_eq!((j.positioned, j.plain, j.other), (2, 1, 1));
        assert!(j.other_example.unwrap().contains("relay/q"));
    }

    fn run(setup: Setup, history: bool, server_ms: f64, delivered: u64, p99: u64) -> RunOutcome {
        let mut hist = stats::new_histogram();
        stats::record(&mut hist, p99);
        RunOutcome {
            round: 1,
            setup,
            history,
            room: "r".into(),
            nodes: vec!["ws://x".into()],
            receivers_per_node: vec![2],
            sent: delivered / 2,
            skipped_ticks: 0,
            send_error: None,
            expected: delivered,
            delivered,
            lost: 0,
            duplicates: 0,
            out_of_order: 0,
            invalid: 0,
            disconnected: 0,
            complete: true,
            joins: Joins {
                positioned: if history { 2 } else { 0 },
                plain: if history { 0 } else { 2 },
                ..Joins::default()
            },
            positions: Positions {
                positioned: if history { delivered } else { 0 },
                unpositioned: if history { 0 } else { delivered },
                ..Positions::default()
            },
            epochs: if history { vec!["e".into()] } else { vec![] },
            latency: LatencySummary::from_histogram(&hist),
            server: Some(Usage {
                cpu_ms: server_ms,
                cpu_us_per_op: Some(server_ms * 1000.0 / delivered as f64),
                ..Usage::default()
            }),
            broker: None,
            client: None,
            machine: None,
            wire_read: delivered * 100,
            hist,
        }
    }

    #[test]
    fn rows_sum_the_rounds_and_ratios_divide_on_by_off() {
        let params = HistoryParams {
            setups: vec![Setup::Single],
            rounds: 2,
            receivers: 2,
            rate: 1.0,
            size: 100,
            duration: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            connect_concurrency: 1,
            retries: 0,
            quiet_wait: Duration::ZERO,
        };
        let mut runs = vec![
            run(Setup::Single, false, 10.0, 1000, 1000),
            run(Setup::Single, true, 30.0, 1000, 3000),
            run(Setup::Single, true, 10.0, 1000, 3000),
            run(Setup::Single, false, 10.0, 1000, 1000),
        ];
        runs[2].round = 2;
        runs[3].round = 2;
        let c = Comparison::new(params, runs, Vec::new());
        let off = c.row(Setup::Single, false).unwrap();
        let on = c.row(Setup::Single, true).unwrap();
        assert_eq!(off.server_us_per_delivery, Some(10.0));
        assert_eq!(on.server_us_per_delivery, Some(20.0));
        assert_eq!(on.server_us_per_delivery_rounds, vec![30.0, 10.0]);
        assert_eq!(on.delivered, 2000);
        let r = c.ratio(Setup::Single).unwrap();
        assert_eq!(r.server_cpu, Some(2.0));
        assert_eq!(r.server_cpu_rounds, vec![3.0, 1.0]);
        assert!(
            (r.server_cpu_paired.unwrap() - 3f64.sqrt()).abs() < 1e-9,
            "{r:?}"
        );
        assert!((r.p99.unwrap() - 3.0).abs() < 0.01, "{r:?}");
        assert_eq!(r.broker_cpu, None);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let table = c.markdown();
        assert!(
            table.contains(
                "| single node | **on / off** | | **2.000×** (per round 3.000, 1.000; \
                 geometric mean 1.732×) |"
            ),
            "{table}"
        );

        let mut bad = c.runs[1].clone();
        bad.positions.gaps = 3;
        bad.joins.positioned = 1;
        bad.joins.plain = 1;
        let problems = bad.problems(2);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let mut off = c.runs[0].clone();
        off.positions.positioned = 1;
        assert_eq!(off.problems(2).len(), 1);
    }
}

//! The load scenarios. Each returns a [`crate::report::Report`].

pub mod burst;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod s2s;

pub mod publisher;

use crate::common::{self, Settings, Shared};
use crate::stats::ShardedHistogram;
use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Receivers joined to a room plus a connected publisher, ready to send.
pub(crate) struct RoomRig {
    pub publisher: publisher::Publisher,
    pub receivers: Vec<JoinHandle<common::ReceiverResult>>,
    pub shared: Arc<Shared>,
    pub hist: Arc<ShardedHistogram>,
    pub stop: watch::Sender<bool>,
}

/// Connects `receivers` clients joined to `room` and one publisher (on the first node, not a
/// member of the room) for `job`; receivers accept sequence numbers below `limit`.
pub(crate) async fn room_rig(
    settings: &Settings,
    room: &str,
    receivers: usize,
    limit: u64,
    size: usize,
    job: publisher::Job,
) -> Result<RoomRig> {
    let conns = common::connect_all(settings, receivers, "r", Some(room))
        .await
        .context("connecting receivers")?;
    let id = format!("{}-pub", settings.run_id);
    let publisher = publisher::Publisher::connect(settings, &id, room, size, job).await?;
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hist = Arc::new(ShardedHistogram::new(workers * 8));
    let receivers = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(common::receive(
                c,
                i,
                limit,
                hist.clone(),
                shared.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    Ok(RoomRig {
        publisher,
        receivers,
        shared,
        hist,
        stop,
    })
}

/// What a [`RoomRig`] run measured: the publisher's outcome and every receiver's count.
pub(crate) struct RoomRun {
    pub publisher: publisher::Outcome,
    pub expected: u64,
    pub complete: bool,
    pub measured: common::Measured,
    pub disconnected: u64,
    pub totals: common::Totals,
    pub latency: crate::stats::LatencySummary,
    pub lost: u64,
    pub loss_pct: f64,
    /// Bytes the receivers read from their sockets from the start until they stopped.
    pub wire_read: u64,
}

impl RoomRig {
    /// Runs the publisher, waits up to `drain` (settling `settle` after the last delivery)
    /// for every receiver to get every message, then stops and counts.
    pub async fn run(
        mut self,
        settings: &Settings,
        receivers: usize,
        drain: std::time::Duration,
        settle: std::time::Duration,
    ) -> Result<RoomRun> {
        let meter = common::Meter::start(&settings.server_pids).context("sampling --server-pid")?;
        let publisher = self.publisher.run().await;
        let expected = publisher.sent * receivers as u64;
        let complete = common::wait_deliveries(&self.shared, expected, drain, settle).await;
        let measured = meter.finish(self.shared.delivered());
        let disconnected = self
            .shared
            .disconnected
            .load(std::sync::atomic::Ordering::Relaxed);
        let totals = common::collect(&self.stop, std::mem::take(&mut self.receivers)).await;
        let wire_read = self
            .shared
            .bytes_read
            .load(std::sync::atomic::Ordering::Relaxed);
        let latency = crate::stats::LatencySummary::from_histogram(&self.hist.merged());
        let lost = expected.saturating_sub(totals.unique);
        let loss_pct = if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        };
        Ok(RoomRun {
            publisher,
            expected,
            complete,
            measured,
            disconnected,
            totals,
            latency,
            lost,
            loss_pct,
            wire_read,
        })
    }
}

impl RoomRun {
    /// The "delivered … lost … duplicates …" summary line.
    pub fn delivered_line(&self, rate: &str, incomplete: &str) -> String {
        format!(
            "delivered    {} of {}{rate}, lost {} ({:.3}%), duplicates {}, out of order {}{}",
            self.totals.unique,
            self.expected,
            self.lost,
            self.loss_pct,
            self.totals.duplicates,
            self.totals.out_of_order,
            if self.complete { "" } else { incomplete }
        )
    }

    /// The line of the bytes the receivers read, per unique delivery.
    pub fn wire_line(&self) -> String {
        crate::report::wire_line(self.wire_read, None, self.totals.unique, "delivery")
    }

    /// The `wire` object of the results.
    pub fn wire_json(&self) -> serde_json::Value {
        crate::report::wire_json(self.wire_read, None, self.totals.unique)
    }

    /// Lines for disconnected receivers and a publisher that stopped early.
    pub fn problem_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.disconnected > 0 {
            lines.push(format!(
                "disconnected {} receivers lost their connection",
                self.disconnected
            ));
        }
        if let Some(e) = &self.publisher.error {
            lines.push(format!("error        {e}"));
        }
        lines
    }

    /// The "lost / duplicates / disconnected" table cell.
    pub fn loss_cell(&self) -> String {
        format!(
            "{} / {} / {}",
            self.lost, self.totals.duplicates, self.disconnected
        )
    }
}

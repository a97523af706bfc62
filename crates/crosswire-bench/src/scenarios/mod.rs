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
    let publisher = publisher::Publisher::connect(&settings.url, &id, room, size, job).await?;
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

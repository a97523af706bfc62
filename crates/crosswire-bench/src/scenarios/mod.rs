//! The four load scenarios. Each returns a [`crate::report::Report`].

pub mod burst;
pub mod echo;
pub mod fanout;
pub mod idle;

use crate::common::{self, Settings, Shared};
use crate::stats::ShardedHistogram;
use crate::ws::Ws;
use anyhow::{Context, Result};
use futures_util::stream::SplitSink;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Receivers joined to a room plus a publisher, ready to send.
pub(crate) struct RoomRig {
    pub publisher: SplitSink<Ws, Message>,
    pub publisher_drain: JoinHandle<()>,
    pub receivers: Vec<JoinHandle<crate::stats::SeqTracker>>,
    pub shared: Arc<Shared>,
    pub hist: Arc<ShardedHistogram>,
    pub stop: watch::Sender<bool>,
}

/// Connects `receivers` clients joined to `room` and one publisher (on the first node, not a
/// member of the room); receivers accept sequence numbers below `limit`.
pub(crate) async fn room_rig(
    settings: &Settings,
    room: &str,
    receivers: usize,
    limit: u64,
) -> Result<RoomRig> {
    let conns = common::connect_all(settings, receivers, "r", Some(room))
        .await
        .context("connecting receivers")?;
    let publisher = crate::ws::connect(&settings.url, &format!("{}-pub", settings.run_id))
        .await
        .context("connecting the publisher")?;
    let (sink, mut stream) = publisher.split();
    let (stop, stop_rx) = watch::channel(false);
    let mut pub_stop = stop_rx.clone();
    // Keep reading the publisher's socket so that pings get answered and replies are drained.
    let publisher_drain = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = pub_stop.changed() => break,
                m = stream.next() => if m.is_none_or(|m| m.is_err()) { break },
            }
        }
    });
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
        publisher: sink,
        publisher_drain,
        receivers,
        shared,
        hist,
        stop,
    })
}

//! The room publisher of the fan-out and burst scenarios, on its own OS thread with its own
//! single-threaded runtime, so that its send schedule is not delayed by the receiver tasks
//! that keep the main runtime busy.

use crate::stamp::{now_us, room_frame, stamped_data};
use crate::ws;
use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// What the publisher sends.
#[derive(Debug, Clone)]
pub enum Job {
    /// `per_tick` messages every `period` for `duration` (missed ticks are skipped, not
    /// caught up).
    Rate {
        /// Messages per tick.
        per_tick: u64,
        /// Tick period.
        period: Duration,
        /// Sending time.
        duration: Duration,
    },
    /// `messages` messages back to back, flushed once at the end.
    Burst {
        /// Number of messages.
        messages: u64,
    },
}

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Messages handed to the socket.
    pub sent: u64,
    /// Time of the first send ([`now_us`]).
    pub first_send_us: u64,
    /// Time from the first send until the last was flushed, in seconds.
    pub send_secs: f64,
    /// Ticks that fired (rate jobs).
    pub ticks: u64,
    /// Ticks missed because the publisher was late (rate jobs).
    pub skipped_ticks: u64,
    /// Why sending stopped early, if it did.
    pub error: Option<String>,
}

/// A connected publisher waiting for [`Publisher::run`].
pub struct Publisher {
    go: oneshot::Sender<()>,
    done: oneshot::Receiver<Outcome>,
    thread: std::thread::JoinHandle<()>,
}

impl Publisher {
    /// Starts the thread, connects as `id` to `url` and waits until connected.
    pub async fn connect(url: &str, id: &str, room: &str, size: usize, job: Job) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<Outcome>();
        let (url, id, room) = (url.to_string(), id.to_string(), room.to_string());
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("publisher runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let conn = match ws::connect(&url, &id).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    if go_rx.await.is_err() {
                        ws::close(conn).await;
                        return;
                    }
                    let (mut sink, mut stream) = conn.split();
                    // Keep reading so that pings are answered and nothing piles up.
                    let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
                    let outcome = publish(&mut sink, &room, size, &job).await;
                    let _ = done_tx.send(outcome);
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                    drain.abort();
                });
            })
            .context("spawning the publisher thread")?;
        ready_rx
            .await
            .map_err(|_| anyhow!("publisher thread ended early"))?
            .context("connecting the publisher")?;
        Ok(Self {
            go: go_tx,
            done: done_rx,
            thread,
        })
    }

    /// Starts sending; the future resolves when the job is finished.
    pub async fn run(self) -> Outcome {
        let _ = self.go.send(());
        let outcome = self.done.await.unwrap_or_else(|_| Outcome {
            error: Some("publisher thread ended early".into()),
            ..Outcome::default()
        });
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        outcome
    }
}

async fn publish<S>(sink: &mut S, room: &str, size: usize, job: &Job) -> Outcome
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut out = Outcome {
        first_send_us: now_us(),
        ..Outcome::default()
    };
    let start = Instant::now();
    match *job {
        Job::Rate {
            per_tick,
            period,
            duration,
        } => {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let end = start + duration;
            'send: loop {
                interval.tick().await;
                if Instant::now() >= end {
                    break;
                }
                out.ticks += 1;
                for _ in 0..per_tick {
                    let data = stamped_data(out.sent, now_us(), size);
                    if let Err(e) = sink.send(Message::text(room_frame(room, &data))).await {
                        out.error = Some(format!("send failed after {} messages: {e}", out.sent));
                        break 'send;
                    }
                    out.sent += 1;
                }
            }
            let due = (duration.as_secs_f64() / period.as_secs_f64()).ceil() as u64;
            out.skipped_ticks = due.saturating_sub(out.ticks);
        }
        Job::Burst { messages } => {
            for seq in 0..messages {
                let data = stamped_data(seq, now_us(), size);
                if let Err(e) = sink.feed(Message::text(room_frame(room, &data))).await {
                    out.error = Some(format!("send failed after {} messages: {e}", out.sent));
                    break;
                }
                out.sent += 1;
            }
            if out.error.is_none() {
                if let Err(e) = sink.flush().await {
                    out.error = Some(format!("flush failed: {e}"));
                }
            }
        }
    }
    out.send_secs = start.elapsed().as_secs_f64();
    out
}

//! The room publisher of the fan-out and burst scenarios, on its own OS thread with its own
//! single-threaded runtime, so that its send schedule is not delayed by the receiver tasks
//! that keep the main runtime busy.

use crate::common::Settings;
use crate::stamp::{now_us, room_frame, stamped_data_with, Padding};
use crate::ws::{self, Ws, WsSink, WsStream};
use anyhow::{anyhow, Context, Result};
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
    /// Starts the thread, connects as `id` to the first node of `settings` and waits until
    /// connected.
    pub async fn connect(
        settings: &Settings,
        id: &str,
        room: &str,
        size: usize,
        job: Job,
    ) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<Outcome>();
        let (url, id, room) = (settings.url.clone(), id.to_string(), room.to_string());
        let (options, padding) = (settings.connect.clone(), settings.padding);
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
                    let conn = match ws::connect_with(&url, &id, &options).await {
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
                    let message = MessageSpec {
                        room: &room,
                        size,
                        padding,
                    };
                    publish_and_close(conn, &message, &job, done_tx).await;
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

/// Reads until the connection ends, so that pings are answered and nothing piles up;
/// reports the first echo of the (empty) heartbeat on `echoed`.
async fn drain(mut stream: WsStream, echoed: oneshot::Sender<()>) {
    let mut echoed = Some(echoed);
    while let Some(Ok(message)) = stream.next().await {
        if matches!(&message, Message::Text(t) if t.is_empty()) {
            if let Some(tx) = echoed.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// Runs `job` on `conn`, sends the outcome on `done`, and closes.
///
/// Before the outcome is reported, a heartbeat round trip makes sure the server has read
/// and handled every message (it handles a connection's messages in order). The close then
/// waits for the server's answer: a socket closed with unread bytes (say a ping that came
/// in meanwhile) is reset, and a reset makes the server drop whatever of the burst it had
/// not read yet.
async fn publish_and_close(
    conn: Ws,
    message: &MessageSpec<'_>,
    job: &Job,
    done: oneshot::Sender<Outcome>,
) {
    let (mut sink, stream) = conn.split();
    let (echo_tx, echo_rx) = oneshot::channel();
    let mut reader = tokio::spawn(drain(stream, echo_tx));
    let mut outcome = publish(&mut sink, message, job).await;
    if outcome.error.is_none() {
        let barrier = async {
            sink.send_text(String::new()).await?;
            echo_rx.await.map_err(|_| anyhow!("connection ended"))
        };
        match tokio::time::timeout(ws::IO_TIMEOUT, barrier).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => outcome.error = Some(format!("heartbeat after the job: {e:#}")),
            Err(_) => outcome.error = Some("no heartbeat echo after the job".into()),
        }
    }
    let _ = done.send(outcome);
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    if tokio::time::timeout(Duration::from_secs(2), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
}

/// What each message looks like: its room, its data's size and padding.
struct MessageSpec<'a> {
    room: &'a str,
    size: usize,
    padding: Padding,
}

impl MessageSpec<'_> {
    fn frame(&self, seq: u64) -> String {
        room_frame(
            self.room,
            &stamped_data_with(seq, now_us(), self.size, self.padding),
        )
    }
}

async fn publish(sink: &mut WsSink, message: &MessageSpec<'_>, job: &Job) -> Outcome {
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
                    if let Err(e) = sink.send_text(message.frame(out.sent)).await {
                        out.error = Some(format!("send failed after {} messages: {e:#}", out.sent));
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
                if let Err(e) = sink.feed_text(message.frame(seq)).await {
                    out.error = Some(format!("send failed after {} messages: {e:#}", out.sent));
                    break;
                }
                out.sent += 1;
            }
            if out.error.is_none() {
                if let Err(e) = sink.flush().await {
                    out.error = Some(format!("flush failed: {e:#}"));
                }
            }
        }
    }
    out.send_secs = start.elapsed().as_secs_f64();
    out
}

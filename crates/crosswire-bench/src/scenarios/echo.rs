//! Closed-loop request/acknowledgement: N clients each keep K `echo` requests with callback
//! ids in flight; measures acks/s and round-trip time.

use crate::common::{self, Meter, Settings};
use crate::report::{self, Report, Row};
use crate::stamp::{echo_frame, now_us, parse_stamp, stamped_data_with, Padding};
use crate::stats::{per_second, LatencySummary, ShardedHistogram};
use crate::ws::{self, Ws, IO_TIMEOUT};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::FutureExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of the echo scenario.
#[derive(Debug, Clone)]
pub struct EchoParams {
    /// Number of clients.
    pub clients: usize,
    /// Requests each client keeps outstanding.
    pub in_flight: usize,
    /// How long new requests are issued.
    pub duration: Duration,
    /// Size of each request's payload in bytes.
    pub size: usize,
}

/// What one client achieved.
#[derive(Debug, Default)]
struct ClientResult {
    acks: u64,
    error: Option<String>,
    /// Bytes read from and written to the socket while requesting.
    bytes_read: u64,
    bytes_written: u64,
}

async fn client(
    mut conn: Ws,
    key: usize,
    p: EchoParams,
    padding: Padding,
    hist: Arc<ShardedHistogram>,
    mut start: watch::Receiver<Option<Instant>>,
) -> ClientResult {
    let mut res = ClientResult::default();
    let (read_before, written_before) = (conn.bytes_read(), conn.bytes_written());
    let deadline = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t + p.duration;
        }
        if start.changed().await.is_err() {
            return res;
        }
    };
    let mut seq: u64 = 0;
    let mut outstanding = 0usize;
    let mut batch = Vec::with_capacity(64);
    let outcome: Result<()> = async {
        for _ in 0..p.in_flight {
            let data = stamped_data_with(seq, now_us(), p.size, padding);
            conn.feed_text(echo_frame(&data, seq)).await?;
            seq += 1;
            outstanding += 1;
        }
        conn.flush().await?;
        while outstanding > 0 {
            let first = tokio::time::timeout(IO_TIMEOUT, conn.next())
                .await
                .map_err(|_| anyhow!("no echo reply within {IO_TIMEOUT:?}"))?;
            // Handle this reply and every other one already buffered, queueing the follow-up
            // requests, then write them all with one flush.
            let mut next = Some(first);
            let mut queued = false;
            while let Some(msg) = next.take() {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => Some(t),
                    Some(Ok(Message::Close(f))) => bail!("server closed the connection: {f:?}"),
                    Some(Ok(_)) => None,
                    Some(Err(e)) => bail!("connection error: {e:#}"),
                    None => bail!("connection ended"),
                };
                if let Some(stamp) = text.as_ref().and_then(|t| parse_stamp(t.as_str())) {
                    let now = now_us();
                    batch.push(now.saturating_sub(stamp.sent_us));
                    if batch.len() == batch.capacity() {
                        hist.record_all(key, &batch);
                        batch.clear();
                    }
                    res.acks += 1;
                    outstanding -= 1;
                    if Instant::now() < deadline {
                        let data = stamped_data_with(seq, now_us(), p.size, padding);
                        conn.feed_text(echo_frame(&data, seq)).await?;
                        queued = true;
                        seq += 1;
                        outstanding += 1;
                    }
                }
                next = conn.next().now_or_never();
            }
            if queued {
                conn.flush().await?;
            }
        }
        Ok(())
    }
    .await;
    hist.record_all(key, &batch);
    res.bytes_read = conn.bytes_read() - read_before;
    res.bytes_written = conn.bytes_written() - written_before;
    if let Err(e) = outcome {
        res.error = Some(format!("{e:#}"));
    } else {
        ws::close(conn).await;
    }
    res
}

/// Runs the echo scenario.
pub async fn run(settings: &Settings, p: &EchoParams) -> Result<Report> {
    if p.clients == 0 || p.in_flight == 0 {
        bail!("echo needs at least one client and one request in flight");
    }
    let conns = common::connect_all(settings, p.clients, "e", None)
        .await
        .context("connecting echo clients")?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hist = Arc::new(ShardedHistogram::new(workers * 8));
    let (start_tx, start_rx) = watch::channel(None);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (p, hist, start) = (p.clone(), hist.clone(), start_rx.clone());
            tokio::spawn(client(c, i, p, settings.padding, hist, start))
        })
        .collect();
    let meter = Meter::start(&settings.server_pids).context("sampling --server-pid")?;
    let started = Instant::now();
    let _ = start_tx.send(Some(started));
    let (mut acks, mut bytes_read, mut bytes_written) = (0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => {
                acks += r.acks;
                bytes_read += r.bytes_read;
                bytes_written += r.bytes_written;
                errors.extend(r.error);
            }
            Err(e) => errors.push(format!("client task failed: {e}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let measured = meter.finish(acks);
    let latency = LatencySummary::from_histogram(&hist.merged());
    let acks_per_s = per_second(acks, secs);
    let mut lines = vec![
        format!(
            "load         {} clients × {} in flight × {} B for {:.1} s",
            p.clients,
            p.in_flight,
            p.size,
            p.duration.as_secs_f64()
        ),
        format!(
            "acks         {acks} in {secs:.2} s ({}), failed clients {}",
            report::rate(acks_per_s),
            errors.len()
        ),
        report::wire_line(bytes_read, Some(bytes_written), acks, "ack"),
    ];
    if let Some(e) = errors.first() {
        lines.push(format!("first error  {e}"));
    }
    let mut report = Report {
        scenario: "echo".into(),
        params: json!({
            "clients": p.clients, "in_flight": p.in_flight, "size": p.size,
            "duration_secs": p.duration.as_secs_f64(), "nodes": settings.all_urls(),
        }),
        results: json!({
            "acks": acks, "secs": secs, "acks_per_sec": acks_per_s,
            "failed_clients": errors.len(), "errors": errors.iter().take(5).collect::<Vec<_>>(),
            "wire": report::wire_json(bytes_read, Some(bytes_written), acks),
        }),
        latency: Some(latency),
        server: measured.server,
        client: measured.client,
        machine: measured.machine,
        row: Row {
            scenario: "echo".into(),
            load: format!(
                "{} clients × {} in flight, {:.0} s",
                p.clients,
                p.in_flight,
                p.duration.as_secs_f64()
            ),
            throughput: format!("{} acks", report::rate(acks_per_s)),
            loss: format!("– / – / {}", errors.len()),
            latency: report::latency_cell(&latency),
            ..Row::default()
        },
        lines,
    };
    report.fill_usage_cells();
    Ok(report)
}

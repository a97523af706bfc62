//! Fan-out at a fixed rate: C receivers in one room, one publisher sending `room` messages at
//! R per second; measures deliveries/s, loss, duplicates, ordering and end-to-end latency.

use crate::common::{self, Meter, Settings};
use crate::report::{self, Report, Row};
use crate::stamp::{now_us, room_frame, stamped_data};
use crate::stats::{per_second, LatencySummary};
use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// Parameters of the fan-out scenario.
#[derive(Debug, Clone)]
pub struct FanoutParams {
    /// Number of receivers in the room.
    pub receivers: usize,
    /// Messages per second sent by the publisher.
    pub rate: f64,
    /// Size of each message's data in bytes (JSON encoding).
    pub size: usize,
    /// How long the publisher sends.
    pub duration: Duration,
    /// How long to wait for outstanding deliveries after the last send.
    pub drain_timeout: Duration,
    /// Room name.
    pub room: String,
}

/// Splits a rate into (messages per tick, tick period): ticks are never shorter than 1 ms.
pub fn schedule(rate: f64) -> (u64, Duration) {
    let rate = rate.max(0.001);
    let per_tick = (rate / 1000.0).ceil().max(1.0);
    (per_tick as u64, Duration::from_secs_f64(per_tick / rate))
}

/// Runs the fan-out scenario.
pub async fn run(settings: &Settings, p: &FanoutParams) -> Result<Report> {
    if p.receivers == 0 || p.rate <= 0.0 {
        bail!("fanout needs at least one receiver and a positive rate");
    }
    let planned = (p.rate * p.duration.as_secs_f64()).ceil() as u64;
    let mut rig = super::room_rig(settings, &p.room, p.receivers, planned + 1024).await?;
    let (per_tick, period) = schedule(p.rate);

    let meter = Meter::start(&settings.server_pids).context("sampling --server-pid")?;
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let end = start + p.duration;
    let first_send_us = now_us();
    let mut sent: u64 = 0;
    let mut ticks: u64 = 0;
    let mut send_error = None;
    'send: loop {
        interval.tick().await;
        if Instant::now() >= end {
            break;
        }
        ticks += 1;
        for _ in 0..per_tick {
            let data = stamped_data(sent, now_us(), p.size);
            if let Err(e) = rig
                .publisher
                .send(Message::text(room_frame(&p.room, &data)))
                .await
            {
                send_error = Some(format!("publisher send failed after {sent} messages: {e}"));
                break 'send;
            }
            sent += 1;
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    let expected = sent * p.receivers as u64;
    let complete = common::wait_deliveries(
        &rig.shared,
        expected,
        p.drain_timeout,
        p.drain_timeout.min(Duration::from_secs(3)),
    )
    .await;
    let delivered = rig.shared.delivered.load(Ordering::Relaxed);
    let (server, client) = meter.finish(delivered);
    let last_us = rig.shared.last_delivery_us.load(Ordering::Relaxed);
    let window_secs = (last_us.saturating_sub(first_send_us) as f64 / 1e6).max(send_secs);

    let disconnected = rig.shared.disconnected.load(Ordering::Relaxed);
    let totals = common::collect(&rig.stop, std::mem::take(&mut rig.receivers)).await;
    let _ = rig.publisher.close().await;
    rig.publisher_drain.abort();
    let latency = LatencySummary::from_histogram(&rig.hist.merged());

    let lost = expected.saturating_sub(totals.unique);
    let loss_pct = if expected > 0 {
        lost as f64 * 100.0 / expected as f64
    } else {
        0.0
    };
    let deliveries_per_s = per_second(totals.unique, window_secs);
    let skipped_ticks = ((send_secs / period.as_secs_f64()) as u64).saturating_sub(ticks);
    let mut lines = vec![
        format!(
            "load         {} receivers × {} msg/s × {} B for {:.1} s",
            p.receivers,
            p.rate,
            p.size,
            p.duration.as_secs_f64()
        ),
        format!(
            "sent         {sent} messages ({}, {skipped_ticks} ticks skipped)",
            report::rate(per_second(sent, send_secs))
        ),
        format!(
            "delivered    {} of {} ({}), lost {lost} ({loss_pct:.3}%), duplicates {}, out of order {}{}",
            totals.unique,
            expected,
            report::rate(deliveries_per_s),
            totals.duplicates,
            totals.out_of_order,
            if complete { "" } else { " — drain timed out" }
        ),
    ];
    if disconnected > 0 {
        lines.push(format!(
            "disconnected {disconnected} receivers lost their connection"
        ));
    }
    if let Some(e) = &send_error {
        lines.push(format!("error        {e}"));
    }
    let mut report = Report {
        scenario: "fanout".into(),
        params: json!({
            "receivers": p.receivers, "rate": p.rate, "size": p.size,
            "duration_secs": p.duration.as_secs_f64(), "room": p.room,
            "nodes": settings.all_urls(),
        }),
        results: json!({
            "sent": sent, "send_secs": send_secs, "skipped_ticks": skipped_ticks,
            "expected": expected, "delivered": totals.unique, "lost": lost,
            "loss_pct": loss_pct, "duplicates": totals.duplicates,
            "out_of_order": totals.out_of_order, "invalid": totals.invalid,
            "disconnected": disconnected, "complete": complete,
            "window_secs": window_secs, "deliveries_per_sec": deliveries_per_s,
            "send_error": send_error,
        }),
        latency: Some(latency),
        server,
        client,
        row: Row {
            scenario: "fan-out".into(),
            load: format!(
                "{} rcv × {} msg/s × {} B, {:.0} s",
                p.receivers,
                p.rate,
                p.size,
                p.duration.as_secs_f64()
            ),
            throughput: format!("{} deliveries", report::rate(deliveries_per_s)),
            loss: format!("{lost} / {} / {}", totals.duplicates, disconnected),
            latency: report::latency_cell(&latency),
            ..Row::default()
        },
        lines,
    };
    report.fill_usage_cells();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(schedule(200.0), (1, Duration::from_millis(5)));
        assert_eq!(schedule(1000.0), (1, Duration::from_millis(1)));
        assert_eq!(schedule(5000.0), (5, Duration::from_millis(1)));
        let (n, d) = schedule(1500.0);
        assert_eq!(n, 2);
        assert!((d.as_secs_f64() - 2.0 / 1500.0).abs() < 1e-9);
    }
}

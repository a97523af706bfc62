//! Fan-out at a fixed rate: C receivers in one room, one publisher sending `room` messages at
//! R per second; measures deliveries/s, loss, duplicates, ordering and end-to-end latency.

use crate::common::Settings;
use crate::report::{self, Report, Row};
use crate::scenarios::publisher::Job;
use crate::stats::per_second;
use anyhow::{bail, Result};
use serde_json::json;
use std::time::Duration;

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
    let (per_tick, period) = schedule(p.rate);
    let job = Job::Rate {
        per_tick,
        period,
        duration: p.duration,
    };
    let rig = super::room_rig(settings, &p.room, p.receivers, planned + 1024, p.size, job).await?;
    let run = rig
        .run(
            settings,
            p.receivers,
            p.drain_timeout,
            p.drain_timeout.min(Duration::from_secs(3)),
        )
        .await?;
    let (sent, send_secs, first_send_us) = (
        run.publisher.sent,
        run.publisher.send_secs,
        run.publisher.first_send_us,
    );
    let (expected, complete, disconnected, lost, loss_pct) = (
        run.expected,
        run.complete,
        run.disconnected,
        run.lost,
        run.loss_pct,
    );
    let totals = &run.totals;
    let window_secs =
        (totals.last_delivery_us.saturating_sub(first_send_us) as f64 / 1e6).max(send_secs);
    let skipped_ticks = run.publisher.skipped_ticks;
    let send_error = run.publisher.error.clone();
    let deliveries_per_s = per_second(totals.unique, window_secs);
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
        run.delivered_line(
            &format!(" ({})", report::rate(deliveries_per_s)),
            " — drain timed out",
        ),
    ];
    lines.push(run.wire_line());
    lines.extend(run.problem_lines());
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
            "wire": run.wire_json(),
        }),
        latency: Some(run.latency),
        server: run.measured.server.clone(),
        client: run.measured.client.clone(),
        machine: run.measured.machine,
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
            loss: run.loss_cell(),
            latency: report::latency_cell(&run.latency),
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

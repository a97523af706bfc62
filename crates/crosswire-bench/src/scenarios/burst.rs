//! Burst: the publisher sends M `room` messages as fast as it can to C receivers; measures
//! how long until every delivery arrived, loss and duplicates.

use crate::common::Settings;
use crate::report::{self, Report, Row};
use crate::scenarios::publisher::Job;
use crate::stats::per_second;
use anyhow::{bail, Result};
use serde_json::json;
use std::time::Duration;

/// Parameters of the burst scenario.
#[derive(Debug, Clone)]
pub struct BurstParams {
    /// Messages to send.
    pub messages: u64,
    /// Receivers in the room.
    pub receivers: usize,
    /// Size of each message's data in bytes.
    pub size: usize,
    /// Upper bound on the wait for all deliveries.
    pub timeout: Duration,
    /// Room name.
    pub room: String,
}

/// Runs the burst scenario.
pub async fn run(settings: &Settings, p: &BurstParams) -> Result<Report> {
    if p.receivers == 0 || p.messages == 0 {
        bail!("burst needs at least one receiver and one message");
    }
    let job = Job::Burst {
        messages: p.messages,
    };
    let rig = super::room_rig(settings, &p.room, p.receivers, p.messages, p.size, job).await?;
    let run = rig
        .run(
            settings,
            p.receivers,
            p.timeout,
            p.timeout.min(Duration::from_secs(5)),
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
    let send_error = run.publisher.error.clone();
    let total_secs = totals.last_delivery_us.saturating_sub(first_send_us) as f64 / 1e6;
    let dps = per_second(totals.unique, total_secs);
    let mut lines = vec![
        format!(
            "load         {} messages × {} receivers × {} B",
            p.messages, p.receivers, p.size
        ),
        format!("sent         {sent} messages in {:.3} s", send_secs),
        run.delivered_line(
            &format!(" in {total_secs:.3} s ({})", report::rate(dps)),
            " — timed out",
        ),
    ];
    lines.push(run.wire_line());
    lines.extend(run.problem_lines());
    let mut report = Report {
        scenario: "burst".into(),
        params: json!({
            "messages": p.messages, "receivers": p.receivers, "size": p.size,
            "timeout_secs": p.timeout.as_secs_f64(), "room": p.room,
            "nodes": settings.all_urls(),
        }),
        results: json!({
            "sent": sent, "send_secs": send_secs, "expected": expected,
            "delivered": totals.unique, "lost": lost, "loss_pct": loss_pct,
            "duplicates": totals.duplicates, "out_of_order": totals.out_of_order,
            "invalid": totals.invalid, "disconnected": disconnected, "complete": complete,
            "total_secs": total_secs, "deliveries_per_sec": dps, "send_error": send_error,
            "wire": run.wire_json(),
        }),
        latency: Some(run.latency),
        server: run.measured.server.clone(),
        client: run.measured.client.clone(),
        machine: run.measured.machine,
        row: Row {
            scenario: "burst".into(),
            load: format!("{} msg → {} rcv × {} B", p.messages, p.receivers, p.size),
            throughput: format!(
                "{} deliveries, all in {:.2} s",
                report::rate(dps),
                total_secs
            ),
            loss: run.loss_cell(),
            latency: report::latency_cell(&run.latency),
            ..Row::default()
        },
        lines,
    };
    report.fill_usage_cells();
    Ok(report)
}

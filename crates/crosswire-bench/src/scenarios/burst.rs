//! Burst: the publisher sends M `room` messages as fast as it can to C receivers; measures
//! how long until every delivery arrived, loss and duplicates.

use crate::common::{self, Meter, Settings};
use crate::report::{self, Report, Row};
use crate::scenarios::publisher::Job;
use crate::stats::{per_second, LatencySummary};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::sync::atomic::Ordering;
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
    let mut rig = super::room_rig(settings, &p.room, p.receivers, p.messages, p.size, job).await?;
    let meter = Meter::start(&settings.server_pids).context("sampling --server-pid")?;
    let publisher = rig.publisher.run().await;
    let (sent, send_secs, first_send_us) =
        (publisher.sent, publisher.send_secs, publisher.first_send_us);
    let send_error = publisher.error;
    let expected = sent * p.receivers as u64;
    let complete = common::wait_deliveries(
        &rig.shared,
        expected,
        p.timeout,
        p.timeout.min(Duration::from_secs(5)),
    )
    .await;
    let measured = meter.finish(rig.shared.delivered());
    let disconnected = rig.shared.disconnected.load(Ordering::Relaxed);
    let totals = common::collect(&rig.stop, std::mem::take(&mut rig.receivers)).await;
    let total_secs = totals.last_delivery_us.saturating_sub(first_send_us) as f64 / 1e6;
    let latency = LatencySummary::from_histogram(&rig.hist.merged());

    let lost = expected.saturating_sub(totals.unique);
    let loss_pct = if expected > 0 {
        lost as f64 * 100.0 / expected as f64
    } else {
        0.0
    };
    let dps = per_second(totals.unique, total_secs);
    let mut lines = vec![
        format!(
            "load         {} messages × {} receivers × {} B",
            p.messages, p.receivers, p.size
        ),
        format!("sent         {sent} messages in {:.3} s", send_secs),
        format!(
            "delivered    {} of {expected} in {total_secs:.3} s ({}), lost {lost} ({loss_pct:.3}%), duplicates {}, out of order {}{}",
            totals.unique,
            report::rate(dps),
            totals.duplicates,
            totals.out_of_order,
            if complete { "" } else { " — timed out" }
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
        }),
        latency: Some(latency),
        server: measured.server,
        client: measured.client,
        machine: measured.machine,
        row: Row {
            scenario: "burst".into(),
            load: format!("{} msg → {} rcv × {} B", p.messages, p.receivers, p.size),
            throughput: format!(
                "{} deliveries, all in {:.2} s",
                report::rate(dps),
                total_secs
            ),
            loss: format!("{lost} / {} / {}", totals.duplicates, disconnected),
            latency: report::latency_cell(&latency),
            ..Row::default()
        },
        lines,
    };
    report.fill_usage_cells();
    Ok(report)
}

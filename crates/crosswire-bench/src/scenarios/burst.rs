//! Burst: the publisher sends M `room` messages as fast as it can to C receivers; measures
//! how long until every delivery arrived, loss and duplicates.

use crate::common::{self, Meter, Settings};
use crate::report::{self, Report, Row};
use crate::stamp::{now_us, room_frame, stamped_data};
use crate::stats::{per_second, LatencySummary};
use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

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
    let mut rig = super::room_rig(settings, &p.room, p.receivers, p.messages).await?;
    let meter = Meter::start(&settings.server_pids).context("sampling --server-pid")?;
    let first_send_us = now_us();
    let mut sent = 0u64;
    let mut send_error = None;
    for seq in 0..p.messages {
        let data = stamped_data(seq, now_us(), p.size);
        if let Err(e) = rig
            .publisher
            .feed(Message::text(room_frame(&p.room, &data)))
            .await
        {
            send_error = Some(format!("publisher send failed after {sent} messages: {e}"));
            break;
        }
        sent += 1;
    }
    if send_error.is_none() {
        if let Err(e) = rig.publisher.flush().await {
            send_error = Some(format!("publisher flush failed: {e}"));
        }
    }
    let send_secs = now_us().saturating_sub(first_send_us) as f64 / 1e6;
    let expected = sent * p.receivers as u64;
    let complete = common::wait_deliveries(
        &rig.shared,
        expected,
        p.timeout,
        p.timeout.min(Duration::from_secs(5)),
    )
    .await;
    let delivered = rig.shared.delivered.load(Ordering::Relaxed);
    let (server, client) = meter.finish(delivered);
    let last_us = rig.shared.last_delivery_us.load(Ordering::Relaxed);
    let total_secs = last_us.saturating_sub(first_send_us) as f64 / 1e6;
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
        server,
        client,
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

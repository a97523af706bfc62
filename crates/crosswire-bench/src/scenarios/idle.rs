//! Idle connections: open and hold C connections bound to ids, and measure how much server
//! memory each one costs.

use crate::common::{self, Meter, Settings};
use crate::procfs;
use crate::report::{self, Report, Row};
use crate::stats::per_second;
use crate::ws::Ws;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Parameters of the idle scenario.
#[derive(Debug, Clone)]
pub struct IdleParams {
    /// Connections to open.
    pub connections: usize,
    /// How long to hold them all open before measuring.
    pub hold: Duration,
    /// Whether each connection does a heartbeat round trip after connecting, proving that the
    /// server finished setting it up.
    pub verify: bool,
}

/// Keeps a connection open (answering pings) until `stop` flips, then closes it.
async fn hold(mut conn: Ws, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                crate::ws::close(conn).await;
                return true;
            }
            m = conn.next() => if m.is_none_or(|m| m.is_err()) { return false },
        }
    }
}

/// Server RSS growth per connection in bytes.
pub fn bytes_per_connection(before_kb: u64, after_kb: u64, connections: u64) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    (after_kb as f64 - before_kb as f64) * 1024.0 / connections as f64
}

/// Runs the idle scenario.
pub async fn run(settings: &Settings, p: &IdleParams) -> Result<Report> {
    if p.connections == 0 {
        bail!("idle needs at least one connection");
    }
    let want = p.connections as u64 + 1024;
    let nofile = procfs::raise_nofile_limit(want);
    if nofile < want {
        eprintln!(
            "warning: open-file limit is {nofile}, below the {want} this run needs; \
             connections beyond it will fail"
        );
    }
    let meter = Meter::start(&settings.server_pids).context("sampling --server-pid")?;
    let started = Instant::now();
    let results = common::connect_many(settings, p.connections, "i", None, p.verify).await;
    let connect_secs = started.elapsed().as_secs_f64();
    let (stop, stop_rx) = watch::channel(false);
    let mut errors: Vec<String> = Vec::new();
    let mut holders = Vec::with_capacity(p.connections);
    for r in results {
        match r {
            Ok(c) => holders.push(tokio::spawn(hold(c, stop_rx.clone()))),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let connected = holders.len() as u64;
    tokio::time::sleep(p.hold).await;
    let measured = meter.finish(connected);
    let _ = stop.send(true);
    let mut dropped = 0u64;
    for h in holders {
        if !matches!(h.await, Ok(true)) {
            dropped += 1;
        }
    }

    let per_conn = measured
        .server
        .as_ref()
        .map(|u| bytes_per_connection(u.rss_before_kb, u.rss_after_kb, connected));
    let client_per_conn = measured
        .client
        .as_ref()
        .map(|u| bytes_per_connection(u.rss_before_kb, u.rss_after_kb, connected));
    let mut lines = vec![
        format!(
            "connections  {connected} of {} open in {connect_secs:.2} s ({}), {} failed, {dropped} dropped while held",
            p.connections,
            report::rate(per_second(connected, connect_secs)),
            errors.len()
        ),
    ];
    if let Some(b) = per_conn {
        lines.push(format!("server mem   {:.1} KiB per connection", b / 1024.0));
    }
    if let Some(b) = client_per_conn {
        lines.push(format!("client mem   {:.1} KiB per connection", b / 1024.0));
    }
    if let Some(e) = errors.first() {
        lines.push(format!("first error  {e}"));
    }
    let mut report = Report {
        scenario: "idle".into(),
        params: json!({
            "connections": p.connections, "hold_secs": p.hold.as_secs_f64(),
            "verify": p.verify, "nofile_limit": nofile, "nodes": settings.all_urls(),
        }),
        results: json!({
            "connected": connected, "failed": errors.len(), "dropped": dropped,
            "connect_secs": connect_secs,
            "connects_per_sec": per_second(connected, connect_secs),
            "server_bytes_per_connection": per_conn,
            "client_bytes_per_connection": client_per_conn,
            "errors": errors.iter().take(5).collect::<Vec<_>>(),
        }),
        latency: None,
        server: measured.server,
        client: measured.client,
        machine: measured.machine,
        row: Row {
            scenario: "idle".into(),
            load: format!("{} connections", p.connections),
            throughput: format!(
                "{} connects/s",
                report::group(per_second(connected, connect_secs).round() as u64)
            ),
            loss: format!("– / – / {}", errors.len() as u64 + dropped),
            latency: "–".into(),
            ..Row::default()
        },
        lines,
    };
    report.fill_usage_cells();
    if let Some(b) = per_conn {
        report.row.server_rss = format!("{} ({:.1} KiB/conn)", report.row.server_rss, b / 1024.0);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_memory() {
        assert_eq!(bytes_per_connection(1000, 11_000, 1000), 10_240.0);
        assert_eq!(bytes_per_connection(1000, 900, 100), -1024.0);
        assert_eq!(bytes_per_connection(1000, 2000, 0), 0.0);
    }
}

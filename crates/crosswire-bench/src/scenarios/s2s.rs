//! Server-to-server requests between two crosswire nodes over Redis: node `a` sends targeted
//! requests to node `b` at a fixed rate, `b` answers each; measures the request→reply round
//! trip. Both nodes run in this process (each with its own Redis connections); the CPU figure
//! is this whole process (both nodes), per request.

use crate::common::Meter;
use crate::report::{Report, Row};
use crate::stats::{new_histogram, per_second, record, LatencySummary};
use anyhow::{bail, Context, Result};
use crosswire::{Ack, Payload, Server, ServerConfig, ServerEmitOptions};
use crosswire_redis::{RedisBroker, RedisConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters of the server-to-server scenario.
#[derive(Debug, Clone)]
pub struct S2sParams {
    /// Redis URL both nodes use.
    pub redis: String,
    /// Requests per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Reply timeout of each request.
    pub timeout: Duration,
}

fn node(name: &str, redis: &str) -> Result<Server> {
    let broker = RedisBroker::new(RedisConfig::from_urls([redis])?)?;
    let config = ServerConfig::default()
        .with_node_name(name)
        .with_server_ping_interval(Duration::ZERO);
    Ok(Server::builder(config).broker(Arc::new(broker)).build()?)
}

/// Runs the scenario.
pub async fn run(p: &S2sParams) -> Result<Report> {
    let run = crate::common::new_run_id();
    let (a_name, b_name) = (format!("bench-a-{run}"), format!("bench-b-{run}"));
    let a = node(&a_name, &p.redis)?;
    let b = node(&b_name, &p.redis)?;
    b.on_server("bench", |payload: Payload| Ack(payload));
    // Wait until a sees b (node discovery), then warm up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.nodes().contains(&b_name) {
        if Instant::now() > deadline {
            bail!(
                "node b was not discovered within 10 s: is Redis reachable at {}?",
                p.redis
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let options = ServerEmitOptions::new()
        .to([b_name.clone()])
        .with_timeout(p.timeout);
    for _ in 0..200 {
        let r = a
            .request_server("bench", &0u64, options.clone())?
            .collect()
            .await;
        if !r.success {
            bail!("warm-up request unanswered");
        }
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let meter = Meter::start(&[]).context("sampling /proc")?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / p.rate.max(1.0));
    // Ticks of 1 ms, each sending the requests due by then.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    while started.elapsed() < p.duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64;
        while sent < due {
            sent += 1;
            let replies = a.request_server("bench", &sent, options.clone())?;
            let tx = tx.clone();
            let t0 = Instant::now();
            tokio::spawn(async move {
                let r = replies.collect().await;
                let _ = tx.send(r.success.then(|| t0.elapsed().as_micros() as u64));
            });
        }
    }
    drop(tx);
    let mut hist = new_histogram();
    let (mut ok, mut failed) = (0u64, 0u64);
    while let Some(r) = rx.recv().await {
        match r {
            Some(us) => {
                ok += 1;
                record(&mut hist, us);
            }
            None => failed += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let measured = meter.finish(ok);
    a.shutdown().await;
    b.shutdown().await;
    let latency = LatencySummary::from_histogram(&hist);
    let cpu = measured
        .client
        .as_ref()
        .and_then(|u| u.cpu_us_per_op)
        .map_or("–".to_string(), |v| format!("{v:.2} µs/req (both nodes)"));
    let lines = vec![
        format!(
            "load         {:.0} req/s for {:.1} s, node a → node b over {}",
            p.rate,
            p.duration.as_secs_f64(),
            p.redis
        ),
        format!(
            "answered     {ok} of {sent} ({:.0}/s), unanswered {failed}",
            per_second(ok, secs)
        ),
        format!("process      {cpu}"),
    ];
    Ok(Report {
        scenario: "s2s".into(),
        params: json!({ "rate": p.rate, "duration_s": p.duration.as_secs_f64(), "redis": p.redis }),
        results: json!({ "sent": sent, "answered": ok, "unanswered": failed }),
        row: Row {
            scenario: "s2s".into(),
            load: format!("{:.0} req/s, {:.0} s", p.rate, p.duration.as_secs_f64()),
            throughput: format!("{:.0} req/s", per_second(ok, secs)),
            loss: format!("{failed} unanswered"),
            latency: format!(
                "{:.2} / {:.2} / {:.2} / {:.2} ms",
                latency.p50_us as f64 / 1000.0,
                latency.p99_us as f64 / 1000.0,
                latency.p999_us as f64 / 1000.0,
                latency.max_us as f64 / 1000.0
            ),
            server_cpu: cpu,
            ..Row::default()
        },
        latency: Some(latency),
        server: None,
        client: measured.client,
        machine: measured.machine,
        lines,
    })
}

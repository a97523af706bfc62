//! The node's metrics in the OpenMetrics text format, which Prometheus scrapes.
//!
//! Nothing is recorded for them per delivery: a scrape reads the counters the node keeps
//! anyway ([`crate::Stats`]: relaxed atomics bumped where things happen, one add per emit for
//! the deliveries, and per-socket traffic counters kept under the lock every delivery takes
//! already), and encodes them with `prometheus-client`. Histograms (handler durations by
//! event, server-to-server reply latency, publish latency per broker server) are relaxed
//! atomic buckets ([`crosswire_core::Histogram`]) observed once per handler run, reply or
//! publish batch. Every label set is bounded: closes by a fixed set of close codes (others
//! count as `other`), handler durations by the event names the application registered (at
//! most 256 per kind, then `other`), broker servers by the broker's configuration.
//!
//! ```no_run
//! # async fn demo(server: crosswire::Server) {
//! let app = axum::Router::new()
//!     .route("/metrics", server.metrics_handler())
//!     .merge(server.router());
//! # let _ = app;
//! # }
//! ```

use crosswire_core::{BrokerNodeStats, HistogramSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::node::Server;
use crate::requests::RequestStats;
use crate::stats::Stats;

/// The `Content-Type` of [`Server::metrics_text`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Server {
    /// The node's metrics in the OpenMetrics text format (Prometheus scrapes it): every
    /// counter of [`Server::stats`] under the prefix `crosswire_`, upgrades refused by
    /// reason, closes by close code, connections, bound ids and live nodes as gauges, and
    /// the broker's health. Costs one pass over the node's sockets; nothing on the hot path.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::with_prefix("crosswire");
        registry.register_collector(Box::new(Snapshot::of(self)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// An axum `GET` route answering [`Server::metrics_text`], to mount at `/metrics` in an
    /// application's router (`crosswire serve` does).
    pub fn metrics_handler<S>(&self) -> axum::routing::MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let server = self.clone();
        axum::routing::get(move || {
            let server = server.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    server.metrics_text(),
                )
            }
        })
    }
}

/// What one scrape reports, read at its start.
#[derive(Debug)]
struct Snapshot {
    node: String,
    stats: Stats,
    closes: Vec<(Option<u16>, u64)>,
    nodes: usize,
    name_conflict: bool,
    broker: Option<crosswire_core::BrokerHealth>,
    broker_nodes: Vec<BrokerNodeStats>,
    client_durations: Vec<(String, HistogramSnapshot)>,
    server_durations: Vec<(String, HistogramSnapshot)>,
    requests: RequestStats,
}

impl Snapshot {
    fn of(server: &Server) -> Self {
        Self {
            node: server.node_name().to_string(),
            stats: server.stats(),
            closes: server.inner.stats.closes.seen().collect(),
            nodes: server.nodes().len(),
            name_conflict: server.node_name_conflict(),
            broker: server.broker_health(),
            broker_nodes: server.broker_node_stats(),
            client_durations: server.inner.events.durations(),
            server_durations: server.inner.server_events.durations(),
            requests: server.inner.requests.stats(),
        }
    }

    /// `(name, help, value)` of every plain counter.
    fn counters(&self) -> [(&'static str, &'static str, u64); 34] {
        let s = &self.stats;
        let t = &s.traffic;
        [
            (
                "connections_accepted",
                "WebSocket connections accepted.",
                s.connections_total,
            ),
            (
                "messages_received",
                "Messages received from clients (text and binary).",
                t.messages_in,
            ),
            (
                "received_bytes",
                "Bytes received from clients, frame headers included.",
                t.bytes_in,
            ),
            (
                "messages_sent",
                "Frames queued to clients: deliveries, replies, heartbeats.",
                t.messages_out,
            ),
            ("sent_bytes", "Bytes written to clients.", t.bytes_out),
            (
                "remote_deliveries",
                "Client-bound deliveries received from other nodes (one per envelope).",
                s.remote_deliveries,
            ),
            (
                "local_deliveries",
                "Messages queued to this node's sockets by emits: one per receiving socket.",
                s.local_deliveries,
            ),
            (
                "recoveries",
                "Re-joins with a position that got every missed message.",
                s.recoveries,
            ),
            (
                "recoveries_missed",
                "Re-joins with a position past the history window or of another epoch.",
                s.recoveries_missed,
            ),
            (
                "replayed_messages",
                "Missed messages queued by recoveries.",
                s.replayed_messages,
            ),
            (
                "history_errors",
                "History reads and writes that failed (broker down): joined without recovery, or delivered here live without a position.",
                s.history_errors,
            ),
            (
                "unconfirmed_joins",
                "Joins whose room subscription the broker did not confirm in time: joined, messages from other nodes lag.",
                s.unconfirmed_joins,
            ),
            (
                "queue_full_drops",
                "Messages not queued because a socket's queue was full.",
                s.dropped_messages,
            ),
            (
                "slow_client_disconnects",
                "Sockets disconnected because their queue was full.",
                s.slow_disconnects,
            ),
            (
                "ping_timeouts",
                "Sockets terminated for missing a protocol pong.",
                s.ping_timeouts,
            ),
            (
                "unbound_timeouts",
                "Sockets closed for not being bound to an id in time.",
                s.unbound_timeouts,
            ),
            (
                "handshake_timeouts",
                "Connections closed for not sending their request head in time.",
                s.handshake_timeouts,
            ),
            (
                "tls_failures",
                "TLS handshakes that failed.",
                s.tls_failures,
            ),
            (
                "accept_errors",
                "Failed accepts on the listener (each followed by a pause).",
                s.accept_errors,
            ),
            (
                "malformed_frames",
                "Client frames dropped as malformed.",
                s.malformed_frames,
            ),
            (
                "unknown_events",
                "Client events with no handler.",
                s.unknown_events,
            ),
            (
                "rejected_events",
                "Client events whose handler was not called (an extractor failed).",
                s.rejected_events,
            ),
            (
                "handler_panics",
                "Handlers that panicked.",
                s.handler_panics,
            ),
            (
                "protocol_errors",
                "Connections closed for breaking RFC 6455.",
                s.protocol_errors,
            ),
            (
                "rate_limited_messages",
                "Client messages over their connection's rate limit.",
                s.rate_limited,
            ),
            (
                "deflate_connections",
                "Connections that negotiated permessage-deflate.",
                s.deflate_connections,
            ),
            (
                "compressed_messages",
                "Messages compressed (once per message and window size).",
                s.compressed_messages,
            ),
            (
                "compression_input_bytes",
                "Bytes of the frames compressed, before compression.",
                s.compressed_bytes_in,
            ),
            (
                "compression_output_bytes",
                "Bytes of the frames compressed, after compression.",
                s.compressed_bytes_out,
            ),
            (
                "broker_publish_drops",
                "Broker messages not published: the publish queue was full.",
                s.broker_dropped,
            ),
            (
                "envelopes_received",
                "Envelopes received from other nodes and handled.",
                s.envelopes_received,
            ),
            (
                "envelopes_duplicate",
                "Envelopes received twice and dropped.",
                s.envelopes_duplicate,
            ),
            (
                "server_requests",
                "Server-to-server requests sent.",
                self.requests.sent,
            ),
            (
                "server_request_timeouts",
                "Server-to-server requests whose timeout passed with replies missing.",
                self.requests.timeouts,
            ),
        ]
    }

    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)> {
        let mut gauges = vec![
            (
                "connections",
                "Sockets connected now.",
                self.stats.connections as i64,
            ),
            (
                "bound_ids",
                "Sockets bound to an id now.",
                self.stats.bound_ids as i64,
            ),
            (
                "nodes",
                "Live nodes of the cluster, this one included.",
                self.nodes as i64,
            ),
            (
                "node_name_conflict",
                "1 while another live node uses this node's name.",
                i64::from(self.name_conflict),
            ),
        ];
        if let Some(b) = &self.broker {
            gauges.extend([
                (
                    "broker_healthy",
                    "1 while the broker can publish and receive.",
                    i64::from(b.healthy),
                ),
                (
                    "broker_healthy_publishers",
                    "Broker connections able to publish.",
                    b.healthy_publishers as i64,
                ),
                (
                    "broker_healthy_subscribers",
                    "Broker connections receiving.",
                    b.healthy_subscribers as i64,
                ),
                (
                    "broker_connections",
                    "Broker connections configured.",
                    b.total as i64,
                ),
            ]);
        }
        gauges
    }
}

/// A counter with one label, `key`, taking each of `values`.
fn labelled_counter(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, key): (&str, &str, &str),
    values: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        metric
            .encode_family(&[(key, value.as_str())])?
            .encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let node = [("node", self.node.as_str())];
        encoder
            .encode_descriptor("node", "The node's name.", None, MetricType::Info)?
            .encode_info(&node)?;
        for (name, help, value) in self.counters() {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        for (name, help, value) in self.gauges() {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        let refused = [
            ("origin".to_string(), self.stats.refused_origin),
            ("capacity".to_string(), self.stats.refused_capacity),
        ];
        let refused_help = "Upgrades refused before the 101: origin (403), capacity (503).";
        labelled_counter(
            &mut encoder,
            ("upgrades_refused", refused_help, "reason"),
            &refused,
        )?;
        let closes: Vec<(String, u64)> = self
            .closes
            .iter()
            .map(|&(code, n)| (code.map_or_else(|| "other".into(), |c| c.to_string()), n))
            .collect();
        let closes_help =
            "Connections closed, by close code (codes outside a fixed set count as `other`).";
        labelled_counter(&mut encoder, ("closes", closes_help, "code"), &closes)?;
        self.encode_histograms(&mut encoder)?;
        self.encode_broker_nodes(&mut encoder)
    }
}

impl Snapshot {
    fn encode_histograms(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "handler_duration",
            "Time handlers take, by kind (client, server) and event name; an async handler until its future completes.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (kind, list) in [
            ("client", &self.client_durations),
            ("server", &self.server_durations),
        ] {
            for (event, h) in list {
                let labels = [("kind", kind), ("event", event.as_str())];
                histogram(metric.encode_family(&labels)?, h)?;
            }
        }
        let metric = encoder.encode_descriptor(
            "server_request_reply",
            "Time from sending a server-to-server request to each of its replies.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        histogram(metric, &self.requests.reply_latency)
    }

    fn encode_broker_nodes(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        if self.broker_nodes.is_empty() {
            return Ok(());
        }
        let counters: [BrokerCounter; 4] = [
            ("broker_node_publishes", "Messages published through each broker server.", |b| b.published),
            ("broker_node_publish_failures", "Messages whose publish failed on each broker server (then retried elsewhere, or failed).", |b| b.publish_failures),
            ("broker_node_retries", "Messages published through each broker server after failing on another.", |b| b.retries),
            ("broker_node_received", "Messages received from each broker server.", |b| b.received),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for b in &self.broker_nodes {
                metric
                    .encode_family(&[("broker_node", &*b.name)])?
                    .encode_counter::<NoLabelSet, _, u64>(&value(b), None)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "broker_node_healthy",
            "1 while a broker server's connection (role publisher or subscriber) is up.",
            None,
            MetricType::Gauge,
        )?;
        for b in &self.broker_nodes {
            for (role, up) in [
                ("publisher", b.publisher_healthy),
                ("subscriber", b.subscriber_healthy),
            ] {
                metric
                    .encode_family(&[("broker_node", &*b.name), ("role", role)])?
                    .encode_gauge(&i64::from(up))?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "broker_node_ping",
            "Round trip of the last health-check PING of each broker server.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for b in &self.broker_nodes {
            if let Some(latency) = b.ping_latency {
                metric
                    .encode_family(&[("broker_node", &*b.name)])?
                    .encode_gauge(&latency.as_secs_f64())?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "broker_node_publish",
            "Round trip of each publish (a pipelined batch) to each broker server.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for b in &self.broker_nodes {
            histogram(
                metric.encode_family(&[("broker_node", &*b.name)])?,
                &b.publish_latency,
            )?;
        }
        Ok(())
    }
}

/// A per-broker-server counter: name, help, and how to read it.
type BrokerCounter = (&'static str, &'static str, fn(&BrokerNodeStats) -> u64);

/// Encodes a histogram snapshot.
fn histogram(mut metric: MetricEncoder<'_>, h: &HistogramSnapshot) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = h.per_bucket().collect();
    metric.encode_histogram::<NoLabelSet>(h.sum.as_secs_f64(), h.count, &buckets, None)
}

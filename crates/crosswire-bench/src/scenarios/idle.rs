//! Idle connections: open and hold C connections bound to ids, and measure how much server
//! memory each one costs.
//!
//! With source addresses ([`run_with_sources`], `--source-addrs`), each client socket is
//! bound to one of them in turn before it connects: one source address has only the
//! ephemeral port range (about 28,000 ports) towards one server address, and clients behind
//! NAT come from a few addresses too.

use crate::common::{self, Meter, Settings};
use crate::procfs;
use crate::report::{self, Report, Row};
use crate::stats::per_second;
use crate::ws::Ws;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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

/// A held connection: the usual client, or a plain `ws://` one from a bound source address.
enum Held {
    Ws(Box<Ws>),
    Bound(Box<WebSocketStream<TcpStream>>),
}

/// Keeps a connection open (answering pings) until `stop` flips, then closes it.
async fn hold(conn: Held, mut stop: watch::Receiver<bool>) -> bool {
    match conn {
        Held::Ws(mut conn) => loop {
            tokio::select! {
                _ = stop.changed() => {
                    crate::ws::close(*conn).await;
                    return true;
                }
                m = conn.next() => if m.is_none_or(|m| m.is_err()) { return false },
            }
        },
        Held::Bound(mut conn) => loop {
            tokio::select! {
                _ = stop.changed() => {
                    let closing = WebSocketStream::close(&mut conn, None);
                    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
                    return true;
                }
                m = conn.next() => if m.is_none_or(|m| m.is_err()) { return false },
            }
        },
    }
}

/// Parses `--source-addrs` items: addresses (`127.0.0.2`, `::1`) and IPv4 ranges, inclusive,
/// given by both ends (`127.0.0.2-127.0.0.20`) or by the last octet of the end
/// (`127.0.0.2-20`). Items may also be comma-separated within one string.
pub fn parse_source_addrs<S: AsRef<str>>(items: &[S]) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|i| i.as_ref().split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((from, to)) = item.split_once('-') else {
            out.push(
                item.parse::<IpAddr>()
                    .with_context(|| format!("source address {item:?} is not an IP address"))?,
            );
            continue;
        };
        let from: Ipv4Addr = from
            .trim()
            .parse()
            .with_context(|| format!("range {item:?}: {from:?} is not an IPv4 address"))?;
        let to = to.trim();
        let to: Ipv4Addr = match to.parse::<u8>() {
            Ok(last) => {
                let [a, b, c, _] = from.octets();
                Ipv4Addr::new(a, b, c, last)
            }
            Err(_) => to.parse().with_context(|| {
                format!("range {item:?}: {to:?} is not an IPv4 address or octet")
            })?,
        };
        let (lo, hi) = (u32::from(from), u32::from(to));
        if hi < lo || hi - lo >= 65_536 {
            bail!("range {item:?} is empty or larger than 65,536 addresses");
        }
        out.extend((lo..=hi).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
    }
    Ok(out)
}

/// Opens `n` plain `ws://` connections with ids `<run>-i<k>` spread over the nodes, client
/// `k` bound to `sources[k % len]` before it connects, at most `connect_concurrency` at a
/// time; each optionally makes a heartbeat round trip. Results keep the index order.
async fn connect_bound(
    settings: &Settings,
    n: usize,
    sources: &[IpAddr],
    heartbeat: bool,
) -> Result<Vec<Result<Held>>> {
    if settings.connect.deflate {
        bail!("--source-addrs does not support --permessage-deflate");
    }
    if settings.connect.protocol != crate::ws::Protocol::Crosswire {
        bail!("--source-addrs supports the crosswire protocol only");
    }
    let nodes = settings.all_urls();
    let mut targets = std::collections::HashMap::new();
    for url in &nodes {
        let parsed = url::Url::parse(url).with_context(|| format!("invalid server url {url:?}"))?;
        if parsed.scheme() != "ws" {
            bail!("--source-addrs supports ws:// urls only, not {url}");
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("server url {url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| anyhow!("server url {url} has no port"))?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {url}"))?
            .find(|a| a.is_ipv4() == sources[0].is_ipv4())
            .ok_or_else(|| anyhow!("{url} has no address of the source addresses' family"))?;
        targets.insert(url.clone(), addr);
    }
    let sem = Arc::new(Semaphore::new(settings.connect_concurrency.max(1)));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let sem = sem.clone();
            let url = settings.url_for(i).to_string();
            let target = targets[&url];
            let source = SocketAddr::new(sources[i % sources.len()], 0);
            let id = format!("{}-i{i}", settings.run_id);
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let conn = tokio::time::timeout(
                    crate::ws::IO_TIMEOUT,
                    open_bound(&url, &id, source, target, heartbeat),
                )
                .await
                .map_err(|_| anyhow!("connecting {id} from {source} to {url} timed out"))?
                .with_context(|| format!("connecting {id} from {source} to {url}"))?;
                Ok(Held::Bound(Box::new(conn)))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| Err(anyhow!("connect task failed: {e}"))),
        );
    }
    Ok(out)
}

/// One connection from `source` (its port picked by the kernel) to `target`, upgraded for
/// `url` with `?id=<id>`, optionally with a heartbeat round trip.
async fn open_bound(
    url: &str,
    id: &str,
    source: SocketAddr,
    target: SocketAddr,
    heartbeat: bool,
) -> Result<WebSocketStream<TcpStream>> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket
        .bind(source)
        .with_context(|| format!("binding to {source}"))?;
    let tcp = socket.connect(target).await?;
    tcp.set_nodelay(true)?;
    let request = crate::ws::client_url(url, id)?;
    let config = WebSocketConfig::default().read_buffer_size(crate::ws::READ_BUFFER_SIZE);
    let (mut ws, _response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    if heartbeat {
        ws.send(Message::text(String::new()))
            .await
            .context("sending heartbeat")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.is_empty() => break,
                Some(Ok(Message::Close(frame))) => bail!("server closed the connection: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("waiting for the heartbeat"),
                None => bail!("server closed the connection before the heartbeat echo"),
            }
        }
    }
    Ok(ws)
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
    run_with_sources(settings, p, &[]).await
}

/// Runs the idle scenario with client sockets bound to `sources` in turn (see
/// [`parse_source_addrs`]); none: the system picks the source address, as [`run`].
pub async fn run_with_sources(
    settings: &Settings,
    p: &IdleParams,
    sources: &[IpAddr],
) -> Result<Report> {
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
    let results = if sources.is_empty() {
        common::connect_many(settings, p.connections, "i", None, p.verify)
            .await
            .into_iter()
            .map(|r| r.map(|c| Held::Ws(Box::new(c))))
            .collect()
    } else {
        connect_bound(settings, p.connections, sources, p.verify).await?
    };
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
    if !sources.is_empty() {
        lines.push(format!(
            "sources      {} source addresses ({} … {}), in turn",
            sources.len(),
            sources[0],
            sources[sources.len() - 1]
        ));
    }
    if let Some(e) = errors.first() {
        lines.push(format!("first error  {e}"));
    }
    let mut report = Report {
        scenario: "idle".into(),
        params: json!({
            "connections": p.connections, "hold_secs": p.hold.as_secs_f64(),
            "verify": p.verify, "nofile_limit": nofile, "nodes": settings.all_urls(),
            "source_addrs": sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
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

    #[test]
    fn source_address_lists_and_ranges() {
        let v = parse_source_addrs(&["127.0.0.2-4", "127.0.0.9,::1"]).unwrap();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            s,
            ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9", "::1"]
        );
        let v = parse_source_addrs(&["127.0.0.254-127.0.1.1"]).unwrap();
        assert_eq!(v.len(), 4);
        assert!(parse_source_addrs::<&str>(&[]).unwrap().is_empty());
        assert!(parse_source_addrs(&["127.0.0.5-3"]).is_err());
        assert!(parse_source_addrs(&["nope"]).is_err());
        assert!(parse_source_addrs(&["127.0.0.1-x"]).is_err());
    }
}

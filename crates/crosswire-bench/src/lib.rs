//! `crosswire-bench`: a load generator for any server that speaks the crosswire relay
//! contract (SPEC §1 wire protocol, §4 relay application).
//!
//! Scenarios (see the `crosswire-bench` binary):
//!
//! - **fanout** — C receivers join one room; one publisher sends `room` messages at a fixed
//!   rate; reports deliveries/s, loss, duplicates, out-of-order arrivals and latency
//!   percentiles.
//! - **burst** — the publisher sends M messages as fast as possible; reports how long all
//!   deliveries took, loss and duplicates.
//! - **echo** — closed-loop `echo` requests with callback ids; reports acks/s and round-trip
//!   percentiles.
//! - **idle** — opens and holds C connections; reports server memory per connection.
//! - **history** — the fan-out on a recoverable room with history on and off, side by side
//!   (it starts its own `crosswire serve` nodes, and a `redis-server`; see [`history`]).
//!
//! With `--server-pid` every scenario also reads the server's CPU time and RSS from `/proc`
//! before and after the measured window and reports CPU time per delivery or ack.
//!
//! Every client counts the bytes it reads from (and echo clients, writes to) its socket, so
//! reports give the bytes on the wire per delivery or ack (`results.wire`), and the
//! counters of a `crosswire serve` node (its `/healthz`) are read before and after each run
//! (`results.server_stats`: e.g. what permessage-deflate compressed, from how many bytes to
//! how many).
//!
//! **TLS and permessage-deflate.** A `wss://` URL connects over TLS (rustls, ring) trusting
//! the authority of `--ca-file` (`crosswire-bench gen-certs DIR` writes a test authority and a
//! certificate for 127.0.0.1 and localhost for `crosswire serve --tls-cert --tls-key`).
//! `--permessage-deflate` offers the extension and requires the server to accept it; such
//! connections use the crate's own client ([`ws::own`], on crosswire's codec) because
//! tungstenite has none; the default connections stay tokio-tungstenite's. `--padding words`
//! fills messages with words instead of `x` repeated, which would compress unrealistically
//! well.
//!
//! ```text
//! crosswire-bench fanout --url ws://127.0.0.1:9000 --receivers 1000 --rate 200 --size 100 \
//!     --duration 10s --server-pid $(pidof crosswire)
//! crosswire-bench burst  --messages 2000 --receivers 1000
//! crosswire-bench echo   --clients 100 --in-flight 4 --duration 10s
//! crosswire-bench idle   --connections 10000
//! crosswire-bench fanout --url ws://127.0.0.1:9000 --urls ws://127.0.0.1:9000,ws://127.0.0.1:9001 \
//!     --server-pid 1234 --server-pid 1235          # two nodes, receivers round-robin
//! crosswire-bench echo --json                       # JSON report on stdout
//! crosswire-bench echo --json-out echo.json         # summary on stdout, JSON to a file
//! crosswire-bench table fanout.json echo.json       # markdown table from JSON reports
//! crosswire-bench gen-certs /tmp/certs              # ca.pem, server.pem, server.key
//! crosswire-bench echo --url wss://127.0.0.1:9443 --ca-file /tmp/certs/ca.pem
//! crosswire-bench burst --permessage-deflate --size 1000 --padding words
//! ```
//!
//! `scripts/bench.sh` builds everything, starts a `crosswire serve` on a free loopback port and
//! runs the four scenarios at their reference loads.
//!
//! Client ids are `<run id>-<role><n>` with a run id unique per invocation, and room names
//! carry the run id too, so runs never see each other's traffic. The publisher of the fan-out
//! and burst scenarios runs on its own thread and runtime so its schedule is not delayed by
//! the receivers; when it still falls behind, missed ticks are skipped (not sent in a burst)
//! and counted.
//!
//! Received frames are not parsed as JSON: each message carries a stamp
//! (`cwb1:<seq>:<send µs>;`, see [`stamp`]) that a substring search finds, which keeps the
//! generator cheap enough not to be the bottleneck on a small machine.

#![warn(missing_docs)]

pub mod common;
pub mod history;
pub mod metrics;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod server_stats;
pub mod stamp;
pub mod stats;
pub mod tls;
pub mod ws;

use anyhow::{anyhow, bail, Result};
use std::time::Duration;

/// Parses a duration such as `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?} (expected e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("invalid duration unit {other:?} in {s:?}"),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| anyhow!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10y").is_err());
        assert!(parse_duration("").is_err());
    }
}

//! `crosswire-bench history` in small: the fan-out on a recoverable room with history on and
//! off, interleaved over two rounds, on a single node and on two nodes over a real
//! `redis-server` (publisher on the first node, receivers split over both). The nodes are
//! crosswire-cli's relay in this process, so the CPU figures are the whole test process's and
//! mean nothing here: the test checks what the comparison counts and what history promises,
//! never a speed — every delivery arrived once, in order; with history on every join reply
//! names the stream and every message carries `stream`, `offset` (its number + 1, consecutive
//! at each receiver) and one `epoch`; with history off none of them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use crosswire::{Retention, Server};
use crosswire_bench::history::{self, Endpoints, HistoryParams, Nodes, RedisProcess, Setup};
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::cluster_suite::{node_config, wait_nodes};
use crosswire_testkit::RedisServer;

/// Receivers of each run (split 60 / 60 over the two nodes of the cluster).
const RECEIVERS: usize = 120;

/// Relay nodes in this process: one, or two over the Redis at `redis`.
struct InProcess {
    redis: RedisProcess,
}

impl Nodes for InProcess {
    type Running = Vec<Server>;

    async fn start(
        &mut self,
        setup: Setup,
        history: bool,
        name: &str,
    ) -> Result<(Endpoints, Vec<Server>)> {
        let mut servers = Vec::new();
        let mut names = Vec::new();
        let mut urls = Vec::new();
        for i in 0..setup.nodes() {
            let node = format!("{name}-{i}");
            // The relay namespace is preset, so a node without history is subscribed to the
            // room's channel before any receiver joins (with history it always is); no
            // server pings, so every frame a client gets is one the run accounts for.
            let mut config = node_config(&node)
                .with_preset_namespaces([crosswire_cli::relay::NAMESPACE])
                .with_server_ping_interval(Duration::ZERO);
            if history {
                config = config.with_history(
                    crosswire_cli::relay::NAMESPACE,
                    Retention::new(100, Duration::from_secs(120)),
                );
            }
            let server = match setup {
                Setup::Single => Server::new(config)?,
                Setup::Cluster => {
                    let redis = RedisConfig::from_urls([self.redis.url()])?;
                    let broker = Arc::new(RedisBroker::new(redis)?);
                    Server::builder(config).broker(broker).build()?
                }
            };
            crosswire_cli::relay::install(&server);
            let addr = server.listen("127.0.0.1:0").await?;
            urls.push(format!("ws://{addr}"));
            servers.push(server);
            names.push(node);
        }
        if setup == Setup::Cluster {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            wait_nodes(&servers.iter().collect::<Vec<_>>(), &names).await;
        }
        let endpoints = Endpoints {
            urls,
            // The nodes share this process with the load generator: its CPU time stands in
            // for theirs, so that the accounting runs (its figures are not the nodes').
            server_pids: vec![std::process::id()],
            broker_pid: (setup == Setup::Cluster).then(|| self.redis.pid()),
        };
        Ok((endpoints, servers))
    }

    async fn stop(&mut self, servers: Vec<Server>) {
        for server in servers {
            server.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_and_off_side_by_side() {
    assert!(
        RedisServer::available(),
        "redis-server is not on PATH (scripts/test.sh installs it)"
    );
    let log = std::env::temp_dir().join(format!("history-fanout-{}.log", std::process::id()));
    let redis = RedisProcess::start("redis-server".as_ref(), None, &log)
        .await
        .expect("redis-server did not start");
    let mut nodes = InProcess { redis };
    let params = HistoryParams {
        setups: vec![Setup::Single, Setup::Cluster],
        rounds: 2,
        receivers: RECEIVERS,
        rate: 100.0,
        size: 100,
        duration: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        settle: Duration::from_millis(100),
        connect_concurrency: 16,
        quiet_wait: Duration::ZERO,
        retries: 0,
    };
    let c = history::compare(&mut nodes, &params)
        .await
        .expect("comparison");
    eprintln!("{}\n{}", c.human(), c.markdown());
    assert_eq!(c.problems(), Vec::<String>::new());

    // Interleaved: off then on in round 1, on then off in round 2, for each setup in turn.
    let order: Vec<(usize, Setup, bool)> = c
        .runs
        .iter()
        .map(|r| (r.round, r.setup, r.history))
        .collect();
    assert_eq!(
        order,
        [
            (1, Setup::Single, false),
            (1, Setup::Single, true),
            (1, Setup::Cluster, false),
            (1, Setup::Cluster, true),
            (2, Setup::Single, true),
            (2, Setup::Single, false),
            (2, Setup::Cluster, true),
            (2, Setup::Cluster, false),
        ]
    );

    for r in &c.runs {
        let label = r.label();
        assert!(r.sent >= 10, "{label}: sent {}", r.sent);
        assert!(r.complete, "{label}");
        assert_eq!(r.expected, r.sent * RECEIVERS as u64, "{label}");
        assert_eq!(r.delivered, r.expected, "{label}");
        assert_eq!(
            (
                r.lost,
                r.duplicates,
                r.out_of_order,
                r.invalid,
                r.disconnected
            ),
            (0, 0, 0, 0, 0),
            "{label}"
        );
        assert!(r.send_error.is_none(), "{label}: {:?}", r.send_error);
        let split = match r.setup {
            Setup::Single => vec![RECEIVERS],
            Setup::Cluster => vec![RECEIVERS / 2, RECEIVERS / 2],
        };
        assert_eq!(r.receivers_per_node, split, "{label}");
        let (p, j) = (&r.positions, &r.joins);
        assert_eq!(p.partial, 0, "{label}");
        if r.history {
            // Every join reply names the stream; every message is positioned, its offset
            // its number + 1 and following the receiver's previous one, in one epoch.
            assert_eq!(
                (j.positioned, j.plain, j.other),
                (RECEIVERS as u64, 0, 0),
                "{label}"
            );
            assert_eq!((p.positioned, p.unpositioned), (r.delivered, 0), "{label}");
            assert_eq!(
                (p.wrong_stream, p.offset_not_seq, p.gaps, p.epoch_changes),
                (0, 0, 0, 0),
                "{label}"
            );
            assert_eq!(r.epochs.len(), 1, "{label}: {:?}", r.epochs);
        } else {
            assert_eq!(
                (j.positioned, j.plain, j.other),
                (0, RECEIVERS as u64, 0),
                "{label}"
            );
            assert_eq!((p.positioned, p.unpositioned), (0, r.delivered), "{label}");
            assert!(r.epochs.is_empty(), "{label}");
        }
        // The accounting ran: CPU time per delivery of the measured process, and of the
        // redis-server in the cluster.
        assert!(r.server_us_per_delivery().is_some(), "{label}");
        assert_eq!(r.broker.is_some(), r.setup == Setup::Cluster, "{label}");
        assert!(
            r.latency.count > 0 && r.latency.count <= r.delivered,
            "{label}"
        );
    }

    // Rows: per setup, off and on, each over both rounds; the ratio of every figure exists.
    assert_eq!(c.rows.len(), 4);
    for setup in [Setup::Single, Setup::Cluster] {
        let (off, on) = (c.row(setup, false).unwrap(), c.row(setup, true).unwrap());
        for row in [off, on] {
            assert_eq!(row.runs, 2);
            let runs = c
                .runs
                .iter()
                .filter(|r| r.setup == setup && r.history == row.history);
            assert_eq!(row.delivered, runs.map(|r| r.delivered).sum::<u64>());
            assert_eq!(row.server_us_per_delivery_rounds.len(), 2);
            assert_eq!(row.p99_rounds_us.len(), 2);
        }
        // Positioned messages are longer on the wire: the same payload plus three fields.
        assert!(
            on.bytes_per_delivery.unwrap() > off.bytes_per_delivery.unwrap() + 30.0,
            "{setup:?}: {:?} against {:?}",
            on.bytes_per_delivery,
            off.bytes_per_delivery
        );
        let ratio = c.ratio(setup).unwrap();
        for (what, v) in [
            ("cpu", ratio.server_cpu),
            ("p50", ratio.p50),
            ("p99", ratio.p99),
            ("bytes", ratio.bytes),
        ] {
            assert!(
                v.is_some_and(|v| v.is_finite() && v > 0.0),
                "{setup:?} {what}: {v:?}"
            );
        }
        // (The redis-server's ratio is left out: a short run may give it no 10 ms tick.)
        assert_eq!(on.broker_us_per_delivery.is_some(), setup == Setup::Cluster);
    }
    let _ = std::fs::remove_file(log);
}

//! `crosswire-bench` command line: see the crate documentation of `crosswire_bench`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use crosswire_bench::common::{self, Settings};
use crosswire_bench::parse_duration;
use crosswire_bench::report::{markdown_table, Report};
use crosswire_bench::scenarios::{burst, echo, fanout, idle, s2s};
use crosswire_bench::stamp::Padding;
use crosswire_bench::ws::{ConnectOptions, Protocol, DEFAULT_DEFLATE_MIN_SIZE};
use crosswire_bench::{server_stats, tls};
use crosswire_testkit::TestCerts;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for servers speaking the crosswire relay contract.
#[derive(Parser, Debug)]
#[command(name = "crosswire-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Server URL (the publisher's node, and every client's when --urls is not given).
    #[arg(long, default_value = "ws://127.0.0.1:9000")]
    url: String,
    /// Nodes to spread clients over, round-robin (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    urls: Vec<String>,
    /// Server process to measure (CPU time, RSS); repeat for several nodes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Print the report as JSON instead of the human-readable summary.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (the human summary still goes to stdout).
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Connection attempts in flight at once. Keep it below the server's listen backlog:
    /// overflowing it drops SYNs, which cost a 1 s retransmission each.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// PEM file of the authorities trusted for `wss://` URLs (e.g. the `ca.pem` of
    /// `crosswire-bench gen-certs`).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Offer permessage-deflate (no context takeover) and require the server to accept it.
    /// Such connections use the bench's own client on crosswire's codec (tungstenite has no
    /// permessage-deflate).
    #[arg(long)]
    permessage_deflate: bool,
    /// With --permessage-deflate: messages the clients send of at least this many bytes go
    /// compressed (smaller ones plain).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_DEFLATE_MIN_SIZE,
          requires = "permessage_deflate")]
    deflate_min_size: usize,
    /// What fills messages up to --size: `x` (repeated, compresses to almost nothing) or
    /// `words` (English words, compresses like text).
    #[arg(long, default_value = "x")]
    padding: Padding,
    /// The protocol the clients speak: `crosswire` (the relay contract) or `socketio`
    /// (Socket.IO v5 over Engine.IO v4, WebSocket only, at `/socket.io/`, against a server
    /// whose events `join`, `room` and `echo` do what the relay's do; see
    /// scripts/bench-peers.sh).
    #[arg(long, default_value = "crosswire")]
    protocol: Protocol,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fixed-rate fan-out to the members of one room.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Receivers in the room.
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        /// Messages per second from the publisher.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Size of each message's data in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// How long to wait for stragglers after the last send.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        drain_timeout: Duration,
        /// Room name.
        #[arg(long, default_value = "bench")]
        room: String,
    },
    /// M messages to a room as fast as possible; time until all are delivered.
    Burst {
        #[command(flatten)]
        common: Common,
        /// Messages to send.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Receivers in the room.
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        /// Size of each message's data in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Upper bound on the wait for all deliveries.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// Room name.
        #[arg(long, default_value = "burst")]
        room: String,
    },
    /// Closed-loop echo requests with callback ids.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Requests each client keeps in flight.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
        /// How long to issue requests.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Size of each request's payload in bytes.
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Open and hold many connections; server memory per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// How long to hold them before measuring.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        hold: Duration,
        /// Skip the heartbeat round trip each connection makes after connecting.
        #[arg(long)]
        no_verify: bool,
        /// Bind each client socket to one of these source addresses in turn before it
        /// connects (`ws://` only): comma-separated or repeated, IPv4 ranges as
        /// `127.0.0.2-127.0.0.20` or `127.0.0.2-20`.
        #[arg(long, value_delimiter = ',')]
        source_addrs: Vec<String>,
    },
    /// Server-to-server requests between two nodes over Redis (both nodes in this process).
    S2s {
        #[command(flatten)]
        common: Common,
        /// Redis URL.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Requests per second.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Fan-out on a recoverable room with history on and off, interleaved, on `crosswire
    /// serve` nodes it starts itself: one node, and two over a redis-server it starts.
    History(crosswire_bench::history::HistoryArgs),
    /// Print a markdown table from JSON reports (files written with --json).
    Table {
        /// JSON report files.
        files: Vec<std::path::PathBuf>,
    },
    /// Write a test certificate authority (`ca.pem`, for --ca-file) and a certificate for
    /// 127.0.0.1 and localhost signed by it (`server.pem`, `server.key`, for `crosswire serve
    /// --tls-cert --tls-key`) into DIR.
    GenCerts {
        /// Directory to write the files into (created if missing).
        dir: PathBuf,
    },
}

fn settings(c: &Common) -> Result<Settings> {
    let tls = c.ca_file.as_deref().map(tls::client_config).transpose()?;
    Ok(Settings {
        url: c.url.clone(),
        urls: c.urls.clone(),
        server_pids: c.server_pids.clone(),
        connect_concurrency: c.connect_concurrency,
        run_id: common::new_run_id(),
        connect: ConnectOptions {
            tls,
            deflate: c.permessage_deflate,
            deflate_min_size: c.deflate_min_size,
            protocol: c.protocol,
        },
        padding: c.padding,
    })
}

/// Records how the clients connected in the report's parameters, and what the server's
/// counters did over the run (`before` and `after` from its `/healthz`) in its results.
fn annotate(report: &mut Report, s: &Settings, before: Option<Value>, after: Option<Value>) {
    if let Some(params) = report.params.as_object_mut() {
        let tls = s.url.starts_with("wss:");
        params.insert("tls".into(), tls.into());
        params.insert("permessage_deflate".into(), s.connect.deflate.into());
        let padding = match s.padding {
            Padding::X => "x",
            Padding::Words => "words",
        };
        params.insert("padding".into(), padding.into());
    }
    let (Some(before), Some(after)) = (before, after) else {
        return;
    };
    let delta = server_stats::delta(&before, &after);
    report.lines.extend(server_stats::deflate_line(&delta));
    if let Some(results) = report.results.as_object_mut() {
        results.insert("server_stats".into(), delta);
    }
}

async fn run_ws_scenario(cmd: Command, common: Common) -> Result<Report> {
    let s = settings(&common)?;
    common::probe(&s).await?;
    let before = server_stats::fetch(&s.url, &s.connect).await.ok();
    let mut report = run_load(cmd, &s).await?;
    let after = server_stats::fetch(&s.url, &s.connect).await.ok();
    annotate(&mut report, &s, before, after);
    Ok(report)
}

async fn run_scenario(cmd: Command, common: Common) -> Result<Report> {
    if let Command::S2s {
        redis,
        rate,
        duration,
        ..
    } = cmd
    {
        return s2s::run(&s2s::S2sParams {
            redis,
            rate,
            duration,
            timeout: Duration::from_secs(5),
        })
        .await;
    }
    run_ws_scenario(cmd, common).await
}

async fn run_load(cmd: Command, s: &Settings) -> Result<Report> {
    match cmd {
        Command::Fanout {
            receivers,
            rate,
            size,
            duration,
            drain_timeout,
            room,
            ..
        } => {
            let room = format!("{room}-{}", s.run_id);
            let p = fanout::FanoutParams {
                receivers,
                rate,
                size,
                duration,
                drain_timeout,
                room,
            };
            fanout::run(s, &p).await
        }
        Command::Burst {
            messages,
            receivers,
            size,
            timeout,
            room,
            ..
        } => {
            let room = format!("{room}-{}", s.run_id);
            let p = burst::BurstParams {
                messages,
                receivers,
                size,
                timeout,
                room,
            };
            burst::run(s, &p).await
        }
        Command::Echo {
            clients,
            in_flight,
            duration,
            size,
            ..
        } => {
            let p = echo::EchoParams {
                clients,
                in_flight,
                duration,
                size,
            };
            echo::run(s, &p).await
        }
        Command::Idle {
            connections,
            hold,
            no_verify,
            source_addrs,
            ..
        } => {
            let p = idle::IdleParams {
                connections,
                hold,
                verify: !no_verify,
            };
            let sources = idle::parse_source_addrs(&source_addrs)?;
            idle::run_with_sources(s, &p, &sources).await
        }
        Command::Table { .. }
        | Command::S2s { .. }
        | Command::GenCerts { .. }
        | Command::History(_) => {
            anyhow::bail!("not a WebSocket load scenario")
        }
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crosswire-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::Table { files } => {
            let docs = files
                .iter()
                .map(|f| {
                    std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            print!("{}", markdown_table(&docs)?);
            return Ok(());
        }
        Command::GenCerts { dir } => {
            TestCerts::generate_in(dir.clone())
                .with_context(|| format!("writing certificates into {}", dir.display()))?;
            println!(
                "wrote {0}/{1}, {0}/{2}, {0}/{3} (and a client certificate)",
                dir.display(),
                TestCerts::CA_CERT,
                TestCerts::SERVER_CERT,
                TestCerts::SERVER_KEY
            );
            return Ok(());
        }
        Command::History(args) => return crosswire_bench::history::main(args.clone()),
        Command::Fanout { common, .. }
        | Command::Burst { common, .. }
        | Command::Echo { common, .. }
        | Command::Idle { common, .. }
        | Command::S2s { common, .. } => common.clone(),
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = common.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().context("starting the tokio runtime")?;
    let json = common.json;
    let json_out = common.json_out.clone();
    let report = rt.block_on(run_scenario(cli.command, common))?;
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    // Do not wait for lingering socket tasks.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

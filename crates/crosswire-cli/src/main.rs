//! `crosswire`: the crosswire server binary.
//!
//! ```text
//! crosswire serve [--host 127.0.0.1] [--port 9000]
//! ```
//! runs the relay application (see `crosswire_cli::relay`) on one node, with no broker;
//!
//! ```text
//! crosswire serve --name node-1 --port 9001 --redis redis://127.0.0.1:6379 [--redis …] [--redundancy 2]
//! ```
//! runs it as one node of a cluster coordinated through Redis;
//! `--redis-cluster redis://h1:p1,redis://h2:p2` through a Redis Cluster (sharded pub/sub),
//! `--nats nats://h:p` through NATS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use crosswire::{
    IpNet, PerMessageDeflate, RateLimit, RateLimitPolicy, Retention, Server, ServerConfig,
};
use crosswire_cli::http::HttpOptions;
use crosswire_nats::{NatsBroker, NatsConfig};
use crosswire_redis::{PublishStrategy, RedisBroker, RedisConfig, RedisTls, ShardSubscriptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "crosswire",
    version,
    about = "Distributed real-time WebSocket server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay application (SPEC §4).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "CROSSWIRE_HOST")]
    host: String,
    /// Port to listen on (0 picks a free one; the bound address is logged).
    #[arg(long, default_value_t = 9000, env = "CROSSWIRE_PORT")]
    port: u16,
    /// This node's name, unique in a cluster. Default: `node-1` on a single node; with
    /// --redis, a generated one (host name and a random suffix, logged at start).
    #[arg(long, env = "CROSSWIRE_NAME")]
    name: Option<String>,
    /// Track who is in the relay's rooms across the cluster: `presence {"room"}` lists every
    /// node's members, and members get `presence` events as ids join and leave (a node that
    /// dies takes its members with it). Each join and leave is then published to every node.
    #[arg(long, env = "CROSSWIRE_PRESENCE")]
    presence: bool,
    /// Keep a history of the relay's rooms and of what is sent to each id, so a client that
    /// comes back (to any node) gets what it missed: events carry `stream`/`offset`/`epoch`,
    /// `join` takes `{"room", "since"}`, and a connection may give `offset` and `epoch` of its
    /// id's stream in its query (docs/PROTOCOL.md, "History and recovery"). In memory on a
    /// single node, in Redis Streams with --redis or --redis-cluster (rooms only there).
    #[arg(long, env = "CROSSWIRE_HISTORY")]
    history: bool,
    /// With --history: messages kept per room.
    #[arg(long, default_value_t = 100, env = "CROSSWIRE_HISTORY_SIZE")]
    history_size: usize,
    /// With --history: seconds a message is kept.
    #[arg(long, default_value_t = 120, env = "CROSSWIRE_HISTORY_TTL")]
    history_ttl: u64,
    /// Log format: `text`, or `json` (one object per line). `RUST_LOG` sets the levels
    /// (default `info`: lifecycle events such as connections opened and closed; `debug` adds
    /// one line per message).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CROSSWIRE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Seconds between protocol pings; sockets that miss a pong are dropped. 0 disables.
    #[arg(long, default_value_t = 20)]
    ping_interval: u64,
    /// Largest message accepted from a client, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_size: usize,
    /// Most bytes queued for one slow client before it is disconnected.
    #[arg(long, default_value_t = 4 << 20)]
    max_queue_bytes: usize,
    /// A Redis node (`redis://[:password@]host:port[/db]`, `rediss://` with TLS); repeat for
    /// several nodes used as equal peers. Without any, the server runs as a single node.
    #[arg(
        long = "redis",
        value_name = "URL",
        env = "CROSSWIRE_REDIS",
        value_delimiter = ','
    )]
    redis: Vec<String>,
    /// A NATS server (`nats://host:port`) of the cluster to use as the broker instead of
    /// Redis; repeat (or separate with commas) for the servers of one NATS cluster. No
    /// history with NATS yet (`--history` is refused).
    #[arg(
        long = "nats",
        value_name = "URL",
        env = "CROSSWIRE_NATS",
        value_delimiter = ',',
        conflicts_with_all = ["redis", "redis_cluster"]
    )]
    nats: Vec<String>,
    /// Seed servers of one Redis Cluster (Redis 7+; `redis://host:port`, repeat or separate
    /// with commas) to use as the broker with sharded pub/sub: each channel is published on
    /// its slot's master and subscribed on its shard (see --shard-subscriptions), and the
    /// other servers are found from the slot map. With
    /// --history, rooms keep history (each with a channel of its own, as --room-channels)
    /// but ids do not; --redundancy and --strategy do not apply.
    #[arg(
        long = "redis-cluster",
        value_name = "URL",
        env = "CROSSWIRE_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis"
    )]
    redis_cluster: Vec<String>,
    /// With --redis-cluster, where channels are subscribed: `masters` (fastest; a master
    /// that dies loses the few messages it held) or `replicas` (a master failover loses
    /// nothing; Redis's replication delay adds up to ~40 ms at p99).
    #[arg(long, default_value = "masters", value_parser = parse_shard_subscriptions)]
    shard_subscriptions: ShardSubscriptions,
    /// PEM file of the certificate authorities trusted for `rediss://` nodes, instead of the
    /// built-in web roots (for a Redis with its own authority).
    #[arg(long, value_name = "FILE", env = "CROSSWIRE_REDIS_CA")]
    redis_ca: Option<PathBuf>,
    /// PEM client certificate shown to `rediss://` nodes that ask for one (Redis's
    /// `tls-auth-clients`); needs --redis-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "CROSSWIRE_REDIS_CERT",
        requires = "redis_key"
    )]
    redis_cert: Option<PathBuf>,
    /// PEM private key of --redis-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "CROSSWIRE_REDIS_KEY",
        requires = "redis_cert"
    )]
    redis_key: Option<PathBuf>,
    /// Publish every message on this many Redis nodes (2: no loss when one dies).
    #[arg(long, default_value_t = 1)]
    redundancy: usize,
    /// How each message picks its Redis node: affine (per-channel order, default), random,
    /// round-robin, fastest.
    #[arg(long, default_value = "affine", value_parser = parse_strategy)]
    strategy: PublishStrategy,
    /// One broker channel per room instead of one for all the relay's rooms: a room message
    /// reaches only the nodes with members in the room, and on --redis-cluster the rooms
    /// spread over the shards. Not with --presence or --history (those rooms keep the shared
    /// channel). Every node of a cluster must use the same setting.
    #[arg(long, env = "CROSSWIRE_ROOM_CHANNELS")]
    room_channels: bool,
    /// Compress envelopes between nodes of at least this many bytes (LZ4). Every node of a
    /// cluster must use the same setting.
    #[arg(long, value_name = "BYTES")]
    compress_above: Option<usize>,
    /// Worker threads of the runtime. Default: one per core. When several nodes share one
    /// machine, give each its share of the cores.
    #[arg(long, env = "CROSSWIRE_THREADS")]
    threads: Option<usize>,
    /// Helper threads that write large broadcasts in parallel (0: none). Default: one fewer
    /// than the cores, at most 3.
    #[arg(long, env = "CROSSWIRE_FLUSH_THREADS")]
    flush_threads: Option<usize>,
    /// A reverse proxy (address or CIDR network, e.g. 127.0.0.1 or 10.0.0.0/8) whose
    /// `Forwarded` / `X-Forwarded-For` headers are believed for the client's address; repeat
    /// or separate with commas. Default: none (the peer address is the client's).
    #[arg(
        long = "trusted-proxy",
        value_name = "NET",
        env = "CROSSWIRE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    trusted_proxies: Vec<IpNet>,
    /// A browser origin allowed to connect (`https://app.example.com`, `https://*.example.com`);
    /// repeat or separate with commas. Upgrades from other origins get 403; requests without
    /// `Origin` (not from a browser) are allowed. Default: every origin.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "CROSSWIRE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Seconds a new connection may take to send its upgrade request (silent or slow clients
    /// are closed then).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Most connections this node holds; past it upgrades get 503. Default: the open-file
    /// limit minus 64.
    #[arg(long, env = "CROSSWIRE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a socket may stay unbound to an id before it is closed with 1008 (the relay
    /// binds from `?id=` at once). Default: no limit.
    #[arg(long, value_name = "SECS")]
    unbound_timeout: Option<f64>,
    /// Messages per second each connection may send, sustained. Default: no limit.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate_limit: Option<f64>,
    /// Messages a connection may send at once under --rate-limit. Default: twice the rate.
    #[arg(long, value_name = "MSGS", requires = "rate_limit")]
    rate_burst: Option<u32>,
    /// Bytes per second each connection may send under --rate-limit (bursts of twice that).
    #[arg(long, value_name = "BYTES_PER_SEC", requires = "rate_limit")]
    rate_limit_bytes: Option<f64>,
    /// Close a connection over its rate limit with 1008, instead of dropping the message
    /// with an error event.
    #[arg(long, requires = "rate_limit")]
    rate_limit_close: bool,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it: messages of
    /// --deflate-min-size bytes and more are sent compressed, compressed client messages
    /// are inflated. Default: off.
    #[arg(long, env = "CROSSWIRE_PERMESSAGE_DEFLATE")]
    permessage_deflate: bool,
    /// zlib level of --permessage-deflate, 0–9.
    #[arg(long, value_name = "LEVEL", default_value_t = 1, requires = "permessage_deflate",
          value_parser = clap::value_parser!(u8).range(0..=9))]
    deflate_level: u8,
    /// Smallest message --permessage-deflate compresses, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 256,
        requires = "permessage_deflate"
    )]
    deflate_min_size: usize,
    /// PEM certificate chain to serve `wss://` (and `https://`) with; needs --tls-key. Reloaded
    /// on SIGHUP and when the file changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "CROSSWIRE_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "CROSSWIRE_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Bearer token of the HTTP API (`POST /api/emit`); without one the API is off.
    #[arg(long, env = "CROSSWIRE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Token of the operator's dashboard (`GET /admin`, opened as `/admin#token=<token>`);
    /// without one the dashboard is off. Keep /admin behind the same network rules as
    /// /metrics.
    #[arg(long, env = "CROSSWIRE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (with colours on a terminal).
    Text,
    /// One JSON object per line (timestamp, level, target, fields, and the connection's span:
    /// `conn`, `id`, `node`), for log shippers.
    Json,
}

/// Installs the log subscriber: `RUST_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve(args) = &cli.command;
    init_logging(args.log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
}

/// `--tls-cert` / `--tls-key`: loading, and reloading on SIGHUP or when a file changes.
mod tls {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use anyhow::Context;
    use crosswire::Tls;

    /// How often the files are checked for changes.
    const CHECK_EVERY: Duration = Duration::from_secs(2);

    fn read(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let cert_pem =
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        Ok((cert_pem, key_pem))
    }

    pub(crate) fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let (cert_pem, key_pem) = read(cert, key)?;
        Tls::from_pem(&cert_pem, &key_pem).context("--tls-cert / --tls-key")
    }

    fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reloads the pair on SIGHUP and when either file's modification time changes; a pair
    /// that does not load is logged and the current one kept.
    pub(crate) fn watch(tls: Tls, cert: Option<PathBuf>, key: Option<PathBuf>) {
        let (Some(cert), Some(key)) = (cert, key) else {
            return;
        };
        tokio::spawn(async move {
            let mut hangup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(signal) => Some(signal),
                    Err(e) => {
                        tracing::warn!(error = %e, "no SIGHUP reload of the certificate");
                        None
                    }
                };
            let mut seen = modified(&[&cert, &key]);
            let mut tick = tokio::time::interval(CHECK_EVERY);
            loop {
                let why = tokio::select! {
                    Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                    _ = tick.tick() => {
                        let now = modified(&[&cert, &key]);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "file change"
                    }
                };
                match read(&cert, &key).and_then(|(c, k)| Ok(tls.reload_pem(&c, &k)?)) {
                    Ok(()) => tracing::info!(trigger = why, "TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(trigger = why, error = %e, "TLS certificate not reloaded; keeping the current one")
                    }
                }
            }
        });
    }
}

/// The connection limits named on the command line.
fn limits(mut config: ServerConfig, args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let handshake =
        Duration::try_from_secs_f64(args.handshake_timeout).context("--handshake-timeout")?;
    config = config.with_handshake_timeout(handshake);
    if !args.allowed_origins.is_empty() {
        config = config.with_allowed_origins(args.allowed_origins.iter().cloned());
    }
    if let Some(max) = args.max_connections {
        config = config.with_max_connections(max);
    }
    if let Some(secs) = args.unbound_timeout {
        let timeout = Duration::try_from_secs_f64(secs).context("--unbound-timeout")?;
        config = config.with_unbound_timeout(Some(timeout));
    }
    if let Some(rate) = args.rate_limit {
        let burst = args
            .rate_burst
            .unwrap_or((rate * 2.0).ceil().min(f64::from(u32::MAX)) as u32);
        let mut limit = RateLimit::new(rate, burst);
        if let Some(bytes) = args.rate_limit_bytes {
            limit = limit.with_bytes(bytes, (bytes * 2.0).ceil() as u64);
        }
        if args.rate_limit_close {
            limit = limit.with_policy(RateLimitPolicy::Close);
        }
        config = config.with_rate_limit(limit);
    }
    if args.permessage_deflate {
        config = config.with_permessage_deflate(
            PerMessageDeflate::new()
                .with_level(args.deflate_level)
                .with_min_size(args.deflate_min_size),
        );
    }
    Ok(config)
}

/// A network (`10.0.0.0/8`) or a single address (`127.0.0.1`, `::1`).
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a network (a.b.c.d/n)"))
}

/// The TLS settings of `rediss://` nodes from the certificate files named on the command line.
fn redis_tls(args: &ServeArgs) -> anyhow::Result<RedisTls> {
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut tls = RedisTls::default();
    if let Some(ca) = &args.redis_ca {
        tls = tls.with_ca_pem(read(ca)?);
    }
    if let (Some(cert), Some(key)) = (&args.redis_cert, &args.redis_key) {
        tls = tls.with_client_cert_pem(read(cert)?, read(key)?);
    }
    Ok(tls)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.flush_threads {
        crosswire::set_flush_threads(threads);
    }
    let mut config = ServerConfig::default();
    if let Some(name) = &args.name {
        config = config.with_node_name(name.clone());
    }
    let config = config
        .with_server_ping_interval(Duration::from_secs(args.ping_interval))
        .with_max_message_size(args.max_message_size)
        .with_max_queue_bytes(args.max_queue_bytes);
    let mut config = limits(
        config.with_trusted_proxies(args.trusted_proxies.iter().copied()),
        &args,
    )?;
    if args.presence {
        config = config.with_presence([crosswire_cli::relay::NAMESPACE]);
    }
    config = config.with_room_channels(args.room_channels);
    if args.history {
        let window = Retention::new(args.history_size, Duration::from_secs(args.history_ttl));
        config = config.with_history(crosswire_cli::relay::NAMESPACE, window);
        if args.redis_cluster.is_empty() {
            config = config.with_id_history(window);
        } else {
            // A Redis Cluster keeps a room's history in the shard of the room's channel.
            config = config.with_room_channels(true);
        }
    }
    let server = if !args.nats.is_empty() {
        let name = args.name.clone().unwrap_or_else(|| "crosswire".to_string());
        let nats = NatsConfig::from_urls(args.nats.iter().cloned())?.with_client_name(name);
        let broker = NatsBroker::connect(nats).await?;
        Server::builder(config.with_compression(args.compress_above))
            .broker(Arc::new(broker))
            .build()?
    } else if args.redis.is_empty() && args.redis_cluster.is_empty() {
        Server::new(config)?
    } else {
        let cluster = !args.redis_cluster.is_empty();
        let urls = if cluster {
            &args.redis_cluster
        } else {
            &args.redis
        };
        let mut redis = RedisConfig::from_urls(urls)?
            .with_tls(redis_tls(&args)?)
            .with_shard_subscriptions(args.shard_subscriptions);
        if !cluster {
            redis = redis
                .with_redundancy(args.redundancy)
                .with_strategy(args.strategy);
        }
        let redis = redis.with_on_health_change(|event| {
            tracing::info!(
                node = %event.node_name,
                role = %event.role,
                event = %event.event,
                healthy = event.healthy,
                publishers = event.healthy_publishers,
                subscribers = event.healthy_subscribers,
                total = event.total_nodes,
                "redis health"
            );
        });
        let broker = if cluster {
            RedisBroker::cluster(redis)?
        } else {
            RedisBroker::new(redis)?
        };
        Server::builder(config.with_compression(args.compress_above))
            .broker(Arc::new(broker))
            .build()?
    };
    crosswire_cli::relay::install(&server);
    crosswire_cli::demo::install(&server);
    let mut http = HttpOptions::new().with_demo_page(crosswire_cli::demo::PAGE);
    if let Some(token) = args.api_token.filter(|t| !t.is_empty()) {
        http = http.with_api_token(token);
    }
    let admin = match args.admin_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(crosswire_cli::admin::Admin::new(&server, token)?),
        None => None,
    };
    if let Some(admin) = &admin {
        http = http.with_admin(admin.clone());
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let router = crosswire_cli::http::router(server.clone(), http);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
        _ => None,
    };
    let serving = {
        let server = server.clone();
        match tls {
            Some(tls) => {
                tls::watch(tls.clone(), args.tls_cert.clone(), args.tls_key.clone());
                tokio::spawn(async move { server.serve_router_tls(listener, router, tls).await })
            }
            None => tokio::spawn(async move { server.serve_router(listener, router).await }),
        }
    };
    tracing::info!(%addr, node = %server.node_name(), "crosswire relay ready");
    if admin.is_some() {
        tracing::info!(path = "/admin", "admin dashboard on");
    }
    shutdown_signal().await;
    if let Some(admin) = &admin {
        admin.shutdown().await;
    }
    server.shutdown().await;
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "listener stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "listener task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

fn parse_strategy(s: &str) -> Result<PublishStrategy, String> {
    match s {
        "affine" | "channel-affine" => Ok(PublishStrategy::ChannelAffine),
        "random" => Ok(PublishStrategy::Random),
        "round-robin" => Ok(PublishStrategy::RoundRobin),
        "fastest" => Ok(PublishStrategy::Fastest),
        other => Err(format!(
            "unknown strategy {other:?} (affine, random, round-robin, fastest)"
        )),
    }
}

fn parse_shard_subscriptions(s: &str) -> Result<ShardSubscriptions, String> {
    match s {
        "masters" => Ok(ShardSubscriptions::Masters),
        "replicas" => Ok(ShardSubscriptions::Replicas),
        other => Err(format!("unknown {other:?} (masters, replicas)")),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

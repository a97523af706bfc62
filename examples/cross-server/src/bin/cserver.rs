//! A server-only node (no WebSocket listener) that answers the `say` server event.
//!
//! ```text
//! cargo run -p example-cross-server --bin cserver -- --name serverA
//! ```
//! Start several with different names (serverA … serverE), then `sender`.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long, default_value = "serverA")]
    name: String,
    /// A Redis node; repeat for several (equal peers).
    #[arg(long = "redis", default_value = "redis://127.0.0.1:6379")]
    redis: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_cross_server::init_logging();
    let args = Args::parse();
    tracing::info!(name = %args.name, redis = ?args.redis, "using configured values");
    let server = example_cross_server::server_node(&args.name, &args.redis)?;
    server.on_server("say", example_cross_server::say);
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

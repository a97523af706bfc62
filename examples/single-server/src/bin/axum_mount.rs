//! crosswire mounted into an existing axum application: HTTP routes and the WebSocket
//! endpoint share one port.
//!
//! ```text
//! cargo run -p example-single-server --bin axum_mount -- --port 9000
//! curl http://127.0.0.1:9000/stats        # HTTP
//! # WebSocket clients connect to ws://127.0.0.1:9000/ws?id=1
//! ```

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use crosswire::{Server, ServerConfig};

#[derive(Parser)]
struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

async fn stats(State(server): State<Server>) -> Json<crosswire::Stats> {
    Json(server.stats())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;
    server.on_connection(|server, socket| {
        if let Some(id) = socket.params().get("id") {
            server.bind(id, socket);
        }
    });
    server.on("echo", |ev| {
        if let Some(reply) = ev.reply {
            let _ = reply.send_raw(ev.payload.raw());
        }
    });
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/ws", server.ws_handler())
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let stopper = server.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stopper.shutdown().await;
        })
        .await?;
    Ok(())
}

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
use crosswire::system::Connection;
use crosswire::{Ack, Payload, Server, ServerConfig, Socket};

#[derive(Parser)]
struct Args {
    /// Port to listen on (0 for any free port; the bound address is logged).
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

async fn stats(State(server): State<Server>) -> Json<crosswire::Stats> {
    Json(server.stats())
}

fn on_connection(_: Connection, server: Server, socket: Socket) {
    if let Some(id) = socket.query("id") {
        server.bind(id, &socket);
    }
}

/// `echo`: answers with the payload as it came, never parsed.
fn echo(payload: Payload) -> Ack<Payload> {
    Ack(payload)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;
    server.on_system(on_connection);
    server.on("echo", echo);
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

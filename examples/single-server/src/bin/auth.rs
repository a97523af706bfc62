//! The seed's "noServer" mode: the application authenticates the HTTP upgrade request
//! itself and rejects a bad token with 401 *before* any WebSocket exists.
//!
//! ```text
//! cargo run -p example-single-server --bin auth -- --port 9000
//! ```
//! `ws://127.0.0.1:9000/ws?token=secret-7` connects as id 7; any other token gets HTTP 401.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use crosswire::{Server, ServerConfig, WsUpgrade};
use serde::Deserialize;

#[derive(Parser)]
struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

#[derive(Deserialize)]
struct Auth {
    token: Option<String>,
}

/// Stands in for real token verification (a JWT check, a session lookup...).
fn verify(token: &str) -> Option<String> {
    token.strip_prefix("secret-").map(str::to_string)
}

async fn ws(
    State(server): State<Server>,
    Query(auth): Query<Auth>,
    upgrade: WsUpgrade,
) -> Response {
    let Some(user) = auth.token.as_deref().and_then(verify) else {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    upgrade.accept(&server, move |server, socket| server.bind(&user, socket))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;
    server.on("whoami", |ev| {
        if let Some(reply) = ev.reply {
            let _ = reply.send(&ev.socket.id());
        }
    });
    let app = Router::new()
        .route("/ws", get(ws))
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

//! The seed's "noServer" mode: the application authenticates the HTTP upgrade request
//! itself and rejects a bad token with 401 *before* any WebSocket exists. The user it
//! authenticated travels with the socket: handlers take it as `Extension<User>`.
//!
//! ```text
//! cargo run -p example-single-server --bin auth -- --port 9000
//! ```
//! `ws://127.0.0.1:9000/ws?token=secret-7` connects as id 7; any other token gets HTTP 401.
//! The `whoami` event answers with the authenticated user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use crosswire::system::Connection;
use crosswire::{Ack, Extension, Server, ServerConfig, Socket, WsUpgrade};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Port to listen on (0 for any free port; the bound address is logged).
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

/// The authenticated user, kept in the socket's extensions.
#[derive(Debug, Clone, Serialize)]
struct User {
    id: String,
    name: String,
}

/// Stands in for real token verification (a JWT check, a session lookup...).
fn verify(token: &str) -> Option<User> {
    let id = token.strip_prefix("secret-")?;
    Some(User {
        id: id.to_string(),
        name: format!("user {id}"),
    })
}

/// The WebSocket endpoint: a plain axum handler that authenticates, then accepts.
async fn ws(State(server): State<Server>, upgrade: WsUpgrade) -> Response {
    let params = upgrade.params(&server);
    let Some(user) = params.get("token").and_then(verify) else {
        tracing::info!("upgrade refused: invalid token");
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    // Bound to the user's id as soon as it opens, with the user in its extensions.
    upgrade
        .bind(user.id.clone())
        .with_extension(user)
        .accept(&server)
}

fn on_connection(_: Connection, socket: Socket, Extension(user): Extension<User>) {
    // Already bound to the user's id by `WsUpgrade::bind`.
    tracing::info!(id = ?socket.id(), name = %user.name, "authenticated user connected");
}

/// `whoami`: answers with the user the socket authenticated as.
fn whoami(Extension(user): Extension<User>) -> Ack<User> {
    Ack(user)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;
    server.on_system(on_connection);
    server.on("whoami", whoami);
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

//! Scenario 1 of the seed README: a single WebSocket server, no broker.
//!
//! ```text
//! cargo run -p example-single-server --bin server -- --port 9000
//! ```
//! then, in another terminal, `cargo run -p example-single-server --bin client -- --id 1`.

use std::time::Duration;

use clap::Parser;
use crosswire::{Server, ServerConfig};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;

    server.on_connection(|server, socket| {
        tracing::info!(params = ?socket.params().to_map(), "client connected");
        // For the demo the id comes straight from the query string; a real application
        // verifies a token here, or better before the upgrade (see the `auth` example).
        match socket.params().get("id") {
            Some(id) => server.bind(id, socket),
            None => socket.close(crosswire::close_code::AUTH_FAILED, "Auth failure"),
        }
    });
    server.on_close(|socket, code, reason| {
        // The id binding and the rooms are cleaned up already.
        tracing::info!(id = ?socket.id(), code, reason, "client disconnected");
    });

    server.on("say", |ev| {
        tracing::info!(id = ?ev.socket.id(), payload = %ev.payload.as_str(), "say");
        if let Some(reply) = ev.reply {
            let _ = reply.send(&json!({ "msg": "I am a callback for your say event" }));
        }
    });
    server.on("joinRoom", |ev| {
        if let Some(id) = ev.socket.id() {
            ev.server.join("testRoom", "1000", &id);
        }
        if let Some(reply) = ev.reply {
            let _ = reply.send(&json!({ "msg": "JoinRoom successfully" }));
        }
    });

    let addr = server.listen(("127.0.0.1", args.port)).await?;
    tracing::info!(%addr, "listening");

    let ticker = server.clone();
    tokio::spawn(async move {
        let mut broadcast = tokio::time::interval(Duration::from_secs(15));
        let mut room = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = broadcast.tick() => {
                    let _ = ticker.to_all().emit("serverSay", &json!({ "msg": "I'm sending this message to everyone" }));
                }
                _ = room.tick() => {
                    let _ = ticker.to_room("testRoom", "1000").emit("roomSay", &json!({ "msg": "This is a message sent to the test room" }));
                }
            }
        }
    });

    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

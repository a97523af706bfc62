//! The client of scenario 1, with the Rust client library.
//!
//! ```text
//! cargo run -p example-single-server --bin client -- --port 9000 --id 1
//! ```

use std::time::Duration;

use clap::Parser;
use crosswire_client::{names, Client, ClientConfig, CloseInfo, EmitOptions, ReconnectInfo};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Server port.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// This client's id.
    #[arg(long, default_value = "1")]
    id: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let config = ClientConfig::new(format!("ws://localhost:{}", args.port))
        .with_param("name", "Sam")
        .with_param("id", &args.id);
    // Registered before connecting, so the first `open` is seen however fast the server is.
    let client = Client::connect_with(config, |client| {
        client.on(names::OPEN, |_| tracing::info!("connected"));
    })?;
    let control = client.clone();
    client.on(names::CLOSE, move |payload| {
        let Ok(close) = payload.parse::<CloseInfo>() else {
            return;
        };
        tracing::info!(code = close.code, reason = %close.reason, "closed");
        match close.code {
            // Closed on purpose, logged out or refused: stay closed.
            4001 | 4010..=4012 => control.manual_close(),
            _ => control.reconnect(false),
        }
    });
    client.on(names::RECONNECT, |payload| {
        if let Ok(info) = payload.parse::<ReconnectInfo>() {
            tracing::info!(attempt = info.repeat, in_ms = info.timeout, "reconnecting");
        }
    });
    client.on(
        names::PONG,
        |latency| tracing::info!(latency_ms = %latency, "pong"),
    );
    client.on("serverSay", |payload| tracing::info!(%payload, "serverSay"));
    client.on("roomSay", |payload| tracing::info!(%payload, "roomSay"));

    client.wait_open(Duration::from_secs(10)).await?;
    let response = client
        .request(
            "say",
            &json!({ "msg": format!("I am a client with ID: {}", args.id) }),
            EmitOptions::new().on_pending(|| tracing::info!("requesting...")),
        )
        .await;
    tracing::info!(response = %serde_json::to_string(&response)?, "say answered");

    let joined = client
        .request("joinRoom", &json!({}), EmitOptions::new())
        .await;
    tracing::info!(response = %serde_json::to_string(&joined)?, "joinRoom answered");

    tokio::signal::ctrl_c().await?;
    client.manual_close();
    Ok(())
}

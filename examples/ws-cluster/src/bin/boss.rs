//! The control client, like the seed's `boss.js`: connects as id 555 and sends the
//! `command` event four times — `broadcast` at 6 s, `toPlayer` (13) at 9 s, `toPlayers`
//! (3, 10, 25, 37) at 12 s and `toRoom` (1000) at 15 s — logging each reply.
//!
//! ```text
//! cargo run -p example-ws-cluster --bin boss -- --port 9000 --id 555
//! ```

use std::time::Duration;

use clap::Parser;
use crosswire_client::{names, Client, ClientConfig, CloseInfo, EmitOptions};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Port of the node to connect to.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// This client's id.
    #[arg(long, default_value = "555")]
    id: String,
    /// Milliseconds between two commands (the first comes after two).
    #[arg(long, default_value_t = 3000)]
    step_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_ws_cluster::init_logging();
    let args = Args::parse();
    tracing::info!(
        "Using configured values - port: {}, id: {}",
        args.port,
        args.id
    );
    let config =
        ClientConfig::new(format!("ws://127.0.0.1:{}", args.port)).with_param("id", &args.id);
    let client = Client::connect_with(config, |client| {
        client.on(names::OPEN, |_| tracing::info!("Connect success"));
    })?;
    client.on(names::CLOSE, |payload| {
        if let Ok(close) = payload.parse::<CloseInfo>() {
            tracing::info!("onCode event: {} {}", close.code, close.reason);
        }
    });
    client.on("say", |data| tracing::info!("Received say event: {data}"));

    let start = tokio::time::Instant::now();
    let step = Duration::from_millis(args.step_ms);
    let commands: [Value; 4] = [
        json!({"action": "broadcast", "msg": "Hello every one"}),
        json!({"action": "toPlayer", "msg": "Hello player 13 ", "toPlayerId": "13"}),
        json!({"action": "toPlayers", "msg": "Hello group players ", "toPlayerIds": ["3", "10", "25", "37"]}),
        json!({"action": "toRoom", "msg": "Hello room players ", "roomId": "1000"}),
    ];
    for (n, command) in (2..).zip(commands) {
        tokio::time::sleep_until(start + step * n).await;
        let response = client
            .request("command", &command, EmitOptions::new())
            .await;
        match response.data() {
            Some(data) => tracing::info!("Received callback response: {data}"),
            None => tracing::warn!(
                "Callback error occurred: {}",
                serde_json::to_string(&response).unwrap_or_default()
            ),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.manual_close();
    Ok(())
}

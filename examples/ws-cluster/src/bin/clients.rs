//! 50 clients spread over the five nodes (ports 9000…9004), like the seed's `clients.js`:
//! 10 of them, chosen at random, join a random room of 1000, 1001 and 1002; every client
//! logs the `say` events it receives.
//!
//! ```text
//! cargo run -p example-ws-cluster --bin clients
//! ```

use std::collections::HashSet;

use clap::Parser;
use crosswire_client::{names, Client, ClientConfig, CloseInfo, EmitOptions};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Number of clients.
    #[arg(long, default_value_t = 50)]
    clients: u32,
    /// Port of the first node; client i connects to base + (i % nodes).
    #[arg(long, default_value_t = 9000)]
    base_port: u16,
    /// Number of nodes (consecutive ports).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    nodes: u16,
    /// The nodes' ports, instead of `--base-port` and `--nodes`: repeat for each node;
    /// client i connects to the (i % count)-th.
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// How many clients join a room.
    #[arg(long, default_value_t = 10)]
    join: usize,
}

const ROOM_IDS: [&str; 3] = ["1000", "1001", "1002"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_ws_cluster::init_logging();
    let args = Args::parse();
    let ports: Vec<u16> = if args.ports.is_empty() {
        (0..args.nodes).map(|n| args.base_port + n).collect()
    } else {
        args.ports.clone()
    };
    let mut rng = rand::thread_rng();
    let mut joiners: HashSet<u32> = HashSet::new();
    while joiners.len() < args.join.min(args.clients as usize) {
        joiners.insert(rng.gen_range(1..=args.clients));
    }

    let mut clients = Vec::new();
    for i in 0..args.clients {
        let port = ports[i as usize % ports.len()];
        let id = i + 1;
        let room = joiners
            .contains(&id)
            .then(|| *ROOM_IDS.choose(&mut rng).expect("rooms"));
        let config = ClientConfig::new(format!("ws://127.0.0.1:{port}")).with_param("id", id);
        // The open handler is registered before connecting, so no connection opens unseen.
        let client = Client::connect_with(config, |client| {
            let handle = client.clone();
            client.on(names::OPEN, move |_| {
                tracing::info!("[Client {id},port:{port}] Connect success");
                if let Some(room) = room {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let response = handle
                            .request("joinRoom", &json!({"roomId": room}), EmitOptions::new())
                            .await;
                        match response.data() {
                            Some(data) => tracing::info!(
                                "[Client {id},port:{port}] Received joinRoom callback response: {data}"
                            ),
                            None => tracing::warn!(
                                "[Client {id},port:{port}] JoinRoom Callback error occurred: {}",
                                serde_json::to_string(&response).unwrap_or_default()
                            ),
                        }
                    });
                }
            });
        })?;
        client.on(names::CLOSE, move |payload| {
            if let Ok(close) = payload.parse::<CloseInfo>() {
                tracing::info!(
                    "[Client {id},port:{port}] onCode event: {} {}",
                    close.code,
                    close.reason
                );
            }
        });
        client.on("say", move |data| {
            tracing::info!("[Client {id},port:{port}] Received say event: {data}");
        });
        clients.push(client);
    }

    tokio::signal::ctrl_c().await?;
    for client in &clients {
        client.manual_close();
    }
    Ok(())
}

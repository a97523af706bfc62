//! One WebSocket node of the cluster, like the seed's `wsserver.js`: clients connect with
//! `?id=<player id>`, `joinRoom {roomId}` joins room `roomId` of namespace `chat`, and the
//! `command` event sends `say` cluster-wide: `broadcast` to everyone, `toPlayer` to one id,
//! `toPlayers` to a list of ids, `toRoom` to a room.
//!
//! ```text
//! cargo run -p example-ws-cluster --bin wsserver -- --name serverA --port 9000
//! ```
//! Start five (serverA…serverE on ports 9000…9004), then `clients`, then `boss`.

use std::sync::Arc;

use clap::Parser;
use crosswire::{Server, ServerConfig};
use crosswire_redis::{RedisBroker, RedisConfig};
use example_ws_cluster::as_id;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long, default_value = "serverA")]
    name: String,
    /// WebSocket port.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// A Redis node; repeat for several (equal peers).
    #[arg(long = "redis", default_value = "redis://127.0.0.1:6379")]
    redis: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_ws_cluster::init_logging();
    let args = Args::parse();
    tracing::info!(name = %args.name, port = args.port, "using configured values");
    let broker = RedisBroker::new(RedisConfig::from_urls(&args.redis)?.with_on_health_change(
        |e| {
            tracing::info!(
                redis_node = %e.node_name,
                role = %e.role,
                event = %e.event,
                healthy = e.healthy,
                "Redis node health changed"
            )
        },
    ))?;
    let server = Server::with_broker(
        ServerConfig::default().with_node_name(&args.name),
        Arc::new(broker),
    )?;
    let name = args.name.clone();

    server.on_connection(move |server, socket| {
        tracing::info!(node = %name, params = ?socket.params(), "client connection params");
        match socket.params().get("id") {
            Some(id) if !id.is_empty() => server.bind(id, socket),
            _ => socket.close(4011, "Auth failure"),
        }
    });
    let name = args.name.clone();
    server.on_close(move |socket, code, _reason| {
        tracing::info!(node = %name, id = ?socket.id(), code, "client disconnected");
    });

    let name = args.name.clone();
    server.on("joinRoom", move |ev| {
        let data: Value = ev.payload.parse().unwrap_or_default();
        let answer = match (ev.socket.id(), as_id(data.get("roomId"))) {
            (Some(id), Some(room)) => {
                tracing::info!(node = %name, %id, %room, "client wants to join room");
                ev.server.join("chat", &room, &id);
                json!({"msg": format!("Successfully joined the roomId:{room}")})
            }
            _ => json!({"msg": "Failed to join the room"}),
        };
        if let Some(reply) = ev.reply {
            let _ = reply.send(&answer);
        }
    });

    let name = args.name.clone();
    server.on("command", move |ev| {
        let data: Value = ev.payload.parse().unwrap_or_default();
        tracing::info!(node = %name, from = ?ev.socket.id(), %data, "received 'command' event");
        let Some(action) = data.get("action").and_then(Value::as_str) else {
            if let Some(reply) = ev.reply {
                let _ = reply.send(&json!({"msg": "Failed to send message"}));
            }
            return;
        };
        let say = json!({"action": action, "msg": data.get("msg")});
        let server = ev.server;
        match action {
            "broadcast" => {
                let _ = server.to_all().emit("say", &say);
            }
            "toPlayer" => {
                if let Some(id) = as_id(data.get("toPlayerId")) {
                    let _ = server.to(id).emit("say", &say);
                }
            }
            "toPlayers" => {
                if let Some(ids) = data.get("toPlayerIds").and_then(Value::as_array) {
                    let ids: Vec<String> = ids.iter().filter_map(|v| as_id(Some(v))).collect();
                    let _ = server.to_ids(ids).emit("say", &say);
                }
            }
            "toRoom" => {
                if let Some(room) = as_id(data.get("roomId")) {
                    let _ = server.to_room("chat", room).emit("say", &say);
                }
            }
            _ => {
                if let Some(reply) = ev.reply {
                    let _ = reply.send(&json!({"msg": "Unknown action type"}));
                }
                return;
            }
        }
        if let Some(reply) = ev.reply {
            let _ = reply
                .send(&json!({"msg": format!("Message sent successfully [action:{action}] ")}));
        }
    });

    let addr = server.listen(("127.0.0.1", args.port)).await?;
    tracing::info!(%addr, node = %args.name, "listening");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

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
use crosswire::system::{Close, Connection, NodeJoined, NodeLeft};
use crosswire::{close_code, Ack, Data, EmitError, Room, Server, ServerConfig, Socket};
use crosswire_redis::{RedisBroker, RedisConfig};
use example_ws_cluster::Id;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long, default_value = "serverA")]
    name: String,
    /// WebSocket port (0 for any free port; the bound address is logged).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// A Redis node; repeat for several (equal peers).
    #[arg(long = "redis", default_value = "redis://127.0.0.1:6379")]
    redis: Vec<String>,
}

/// The namespace of the rooms clients join.
const ROOMS: &str = "chat";

/// `joinRoom {roomId}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRoom {
    room_id: Id,
}

/// `command {action, msg, …}`: what to send, and to whom.
#[derive(Deserialize)]
struct Command {
    msg: String,
    #[serde(flatten)]
    target: Target,
}

/// The `action` of a command, with its target.
#[derive(Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum Target {
    Broadcast,
    ToPlayer {
        to_player_id: Id,
    },
    ToPlayers {
        to_player_ids: Vec<Id>,
    },
    ToRoom {
        room_id: Id,
    },
    #[serde(other)]
    Unknown,
}

impl Target {
    /// The action, as the client named it.
    fn action(&self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::ToPlayer { .. } => "toPlayer",
            Self::ToPlayers { .. } => "toPlayers",
            Self::ToRoom { .. } => "toRoom",
            Self::Unknown => "unknown",
        }
    }
}

/// The `say` event a command sends.
#[derive(Serialize)]
struct Say<'a> {
    action: &'a str,
    msg: &'a str,
}

/// Every answer: `{"msg": …}`.
#[derive(Serialize)]
struct Msg {
    msg: String,
}

fn answer(msg: impl Into<String>) -> Ack<Msg> {
    Ack(Msg { msg: msg.into() })
}

fn on_connection(_: Connection, server: Server, socket: Socket) {
    tracing::info!(node = %server.node_name(), params = ?socket.params(), "client connection params");
    match socket.query("id") {
        Some(id) if !id.is_empty() => server.bind(id, &socket),
        _ => socket.close(close_code::AUTH_FAILED, "Auth failure"),
    }
}

fn on_close(close: Close, server: Server, socket: Socket) {
    tracing::info!(node = %server.node_name(), id = ?socket.id(), code = close.code, "client disconnected");
}

/// Joins at once, while the socket is connected, and answers once the join holds across the
/// cluster: what any node sends to the room after the answer reaches the client.
fn join_room(
    server: Server,
    socket: Socket,
    Data(join): Data<JoinRoom>,
) -> impl std::future::Future<Output = Ack<Msg>> {
    let room = join.room_id;
    let joined = socket.id().map(|id| {
        tracing::info!(node = %server.node_name(), %id, %room, "client wants to join room");
        server.join_confirmed(&Room::new(ROOMS, room.as_str()), &id)
    });
    async move {
        let Some(joined) = joined else {
            return answer("Failed to join the room");
        };
        if let Err(e) = joined.await {
            tracing::warn!(%room, %e, "join");
        }
        answer(format!("Successfully joined the roomId:{room}"))
    }
}

/// Sends `say` to the command's target, wherever in the cluster it is connected.
fn command(
    server: Server,
    socket: Socket,
    Data(command): Data<Command>,
) -> Result<Ack<Msg>, EmitError> {
    let action = command.target.action();
    tracing::info!(node = %server.node_name(), from = ?socket.id(), action, "received 'command' event");
    let say = Say {
        action,
        msg: &command.msg,
    };
    match &command.target {
        Target::Broadcast => server.to_all().emit("say", &say)?,
        Target::ToPlayer { to_player_id } => server.to(to_player_id.as_str()).emit("say", &say)?,
        Target::ToPlayers { to_player_ids } => server
            .to_ids(to_player_ids.iter().map(Id::as_str))
            .emit("say", &say)?,
        Target::ToRoom { room_id } => server
            .to_room(Room::new(ROOMS, room_id.as_str()))
            .emit("say", &say)?,
        Target::Unknown => return Ok(answer("Unknown action type")),
    };
    Ok(answer(format!(
        "Message sent successfully [action:{action}] "
    )))
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
    let server = Server::builder(ServerConfig::default().with_node_name(&args.name))
        .broker(Arc::new(broker))
        .build()?;

    server.on_system(on_connection);
    server.on_system(on_close);
    server.on_system(|joined: NodeJoined| tracing::info!(node = %joined.node, "node joined"));
    server.on_system(|left: NodeLeft| tracing::info!(node = %left.node, "node left"));
    server.on("joinRoom", join_room);
    server.on("command", command);

    let addr = server.listen(("127.0.0.1", args.port)).await?;
    tracing::info!(%addr, node = %args.name, "listening");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

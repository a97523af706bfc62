//! Scenario 1 of the seed README: a single WebSocket server, no broker.
//!
//! ```text
//! cargo run -p example-single-server --bin server -- --port 9000
//! ```
//! then, in another terminal, `cargo run -p example-single-server --bin client -- --id 1`.

use std::time::Duration;

use clap::Parser;
use crosswire::system::{Close, Connection};
use crosswire::{close_code, Ack, Data, Room, Server, ServerConfig, Socket};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// Port to listen on (0 for any free port; the bound address is logged).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Seconds between two `serverSay` broadcasts to everyone.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    broadcast_every: u64,
    /// Seconds between two `roomSay` messages to the test room.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    room_every: u64,
}

/// What clients send with `say`.
#[derive(Deserialize)]
struct Say {
    msg: String,
}

/// What the server answers and sends: `{"msg": …}`.
#[derive(Serialize)]
struct Msg {
    msg: &'static str,
}

/// The room `joinRoom` puts clients in.
fn test_room() -> Room {
    Room::new("testRoom", "1000")
}

/// Binds every socket to the `id` it connected with.
fn on_connection(_: Connection, server: Server, socket: Socket) {
    tracing::info!(params = ?socket.params().to_map(), "client connected");
    // For the demo the id comes straight from the query string; a real application
    // verifies a token here, or better before the upgrade (see the `auth` example).
    match socket.query("id") {
        Some(id) => server.bind(id, &socket),
        None => socket.close(close_code::AUTH_FAILED, "Auth failure"),
    }
}

fn on_close(close: Close, socket: Socket) {
    // The id binding and the rooms are cleaned up already.
    tracing::info!(id = ?socket.id(), code = close.code, reason = %close.reason, "client disconnected");
}

/// `say {msg}`: logged, and answered when the client asked for an answer.
fn say(socket: Socket, Data(say): Data<Say>) -> Ack<Msg> {
    tracing::info!(id = ?socket.id(), msg = %say.msg, "say");
    Ack(Msg {
        msg: "I am a callback for your say event",
    })
}

/// `joinRoom`: puts the client in the test room.
fn join_room(server: Server, socket: Socket) -> Result<Ack<Msg>, &'static str> {
    let id = socket.id().ok_or("the socket has no id")?;
    server.join(&test_room(), &id);
    Ok(Ack(Msg {
        msg: "JoinRoom successfully",
    }))
}

/// Sends `serverSay` to everyone and `roomSay` to the test room, each on its own period.
async fn announcements(server: Server, broadcast_every: Duration, room_every: Duration) {
    let mut broadcast = tokio::time::interval(broadcast_every);
    let mut room = tokio::time::interval(room_every);
    loop {
        tokio::select! {
            _ = broadcast.tick() => {
                let msg = Msg { msg: "I'm sending this message to everyone" };
                let _ = server.to_all().emit("serverSay", &msg);
            }
            _ = room.tick() => {
                let msg = Msg { msg: "This is a message sent to the test room" };
                let _ = server.to_room(test_room()).emit("roomSay", &msg);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_single_server::init_logging();
    let args = Args::parse();
    let server = Server::new(ServerConfig::default())?;

    server.on_system(on_connection);
    server.on_system(on_close);
    server.on("say", say);
    server.on("joinRoom", join_room);

    let addr = server.listen(("127.0.0.1", args.port)).await?;
    tracing::info!(%addr, "listening");

    tokio::spawn(announcements(
        server.clone(),
        Duration::from_secs(args.broadcast_every),
        Duration::from_secs(args.room_every),
    ));

    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

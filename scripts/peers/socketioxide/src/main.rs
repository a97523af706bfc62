//! The crosswire relay's events as a socketioxide app, for `scripts/bench-peers.sh`.
//!
//! `PORT=9000 [REDIS_URL=redis://127.0.0.1:6379] socketioxide-peer` serves Socket.IO v5 over
//! WebSocket only on 127.0.0.1, on one tokio thread (a current-thread runtime), with
//! socketioxide-redis's adapter when `REDIS_URL` is set. Events of namespace `/`, as the
//! relay (crates/crosswire-cli/src/relay.rs) defines them:
//!
//! - `join` / `leave` `{"room"}`: joins or leaves the room, acks `{"ok": true}`;
//! - `room` `{"room", "data"}`: event `msg` with `data` to every member of the room on every
//!   node (the sender too, when it is a member), acks `{"ok": true}` when asked;
//! - `echo` `<any>`: acks the same payload.
//!
//! A payload of the wrong shape is acked `{"ok": false, "error"}` and sends nothing.
//!
//! Each socket may queue `MAX_BUFFER_SIZE` packets (default 32,768, about the 4 MiB crosswire
//! queues per socket at the benchmark's 120-byte frames) instead of socketioxide's default of
//! 128, past which an emit to that socket fails and the packet is dropped: with 128 a burst
//! of 2,000 messages to a room loses most of them. Likewise the Redis adapter's subscription
//! channel holds `STREAM_BUFFER` messages (default 32,768 instead of socketioxide-redis's
//! 1,024), past which a node drops what comes from Redis: with 1,024 a node that falls a few
//! seconds behind (on the busy shared core of the cluster run) loses whole messages.

use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::{ParserError, SocketIo, TransportType};
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

#[derive(Deserialize)]
struct RoomName {
    room: String,
}

#[derive(Deserialize)]
struct ToRoom {
    room: String,
    data: Value,
}

fn answer<T>(parsed: &Result<T, ParserError>) -> Value {
    match parsed {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": format!("invalid payload: {e}") }),
    }
}

async fn on_join<A: Adapter>(
    socket: SocketRef<A>,
    TryData(r): TryData<RoomName>,
    ack: AckSender<A>,
) {
    let reply = answer(&r);
    if let Ok(r) = r {
        socket.join(r.room);
    }
    let _ = ack.send(&reply);
}

async fn on_leave<A: Adapter>(
    socket: SocketRef<A>,
    TryData(r): TryData<RoomName>,
    ack: AckSender<A>,
) {
    let reply = answer(&r);
    if let Ok(r) = r {
        socket.leave(r.room);
    }
    let _ = ack.send(&reply);
}

async fn on_room<A: Adapter>(io: SocketIo<A>, TryData(m): TryData<ToRoom>, ack: AckSender<A>) {
    let reply = answer(&m);
    if let Ok(m) = m {
        let _ = io.to(m.room).emit("msg", &m.data).await;
    }
    let _ = ack.send(&reply);
}

async fn on_echo<A: Adapter>(Data(v): Data<Value>, ack: AckSender<A>) {
    let _ = ack.send(&v);
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on("join", on_join);
    socket.on("leave", on_leave);
    socket.on("room", on_room);
    socket.on("echo", on_echo);
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How many packets or messages may wait: `MAX_BUFFER_SIZE` and `STREAM_BUFFER`.
struct Buffers {
    socket: usize,
    stream: usize,
}

fn env_or(name: &str, default: usize) -> Result<usize, Error> {
    match std::env::var(name) {
        Ok(n) => Ok(n.parse::<usize>()?),
        Err(_) => Ok(default),
    }
}

async fn serve(port: u16, redis_url: Option<String>, buffers: Buffers) -> Result<(), Error> {
    let buffer = buffers.socket;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = match redis_url {
        Some(url) => {
            // socketioxide-redis's driver speaks RESP3 (Redis 7 and later).
            let sep = if url.contains('?') { '&' } else { '?' };
            let client = redis::Client::open(format!("{url}{sep}protocol=resp3"))?;
            let config = RedisAdapterConfig::new().with_stream_buffer(buffers.stream);
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config).await?;
            let (layer, io) = SocketIo::builder()
                .transports([TransportType::Websocket])
                .max_buffer_size(buffer)
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect).await?;
            axum::Router::new().layer(layer)
        }
        None => {
            let (layer, io) = SocketIo::builder()
                .transports([TransportType::Websocket])
                .max_buffer_size(buffer)
                .build_layer();
            io.ns("/", on_connect);
            axum::Router::new().layer(layer)
        }
    };
    eprintln!("socketioxide-peer listening on 127.0.0.1:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}

fn main() -> Result<(), Error> {
    let port = std::env::var("PORT")
        .map_err(|_| "PORT is not set")?
        .parse::<u16>()?;
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let buffers = Buffers {
        socket: env_or("MAX_BUFFER_SIZE", 32_768)?,
        stream: env_or("STREAM_BUFFER", 32_768)?,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(port, redis_url, buffers))
}

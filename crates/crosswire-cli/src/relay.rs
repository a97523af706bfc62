//! The relay contract, used by the demo, the benchmarks and outside conformance checks.
//!
//! - connect with query `id=<unique client id>`: the socket is bound to that id (a socket
//!   without one is closed with 4011);
//! - `join` / `leave` `{"room"}`: joins or leaves room `<room>` of namespace `relay`, replies
//!   `{"ok": true}` (a join once the broker has the room's subscription here). With history
//!   on (`crosswire serve --history`), `join` takes `{"room", "since": {"offset", "epoch"}}`:
//!   the messages missed since that position are sent first, in order, and the reply is
//!   `{"ok": true, "stream", "offset", "epoch", "recovered"}` (see "History and recovery" in
//!   docs/PROTOCOL.md). The messages sent to an id are kept too: a client that connects with
//!   `offset` and `epoch` in its query (the last position it saw of its stream `@<id>`) gets
//!   what was sent to it meanwhile, then event `recovered`
//!   `{"stream", "offset", "epoch", "recovered"}`;
//! - `echo <any>`: replies with the same payload;
//! - `room {"room", "data"}`: event `msg` with `data` to every member of the room on every
//!   node; `all {"data"}`: to every socket; `to {"id", "data"}`: to one client; `ids {"ids",
//!   "data"}`: to each listed client. Each replies `{"ok": true}` when asked;
//! - `whoami` (any payload): replies `{"id": <bound id or null>, "node": <this node's name>,
//!   "addr": <the client's address or null>}`, the address being `Socket::client_addr` as
//!   text (`203.0.113.7`, `2001:db8::1`): the TCP peer's, or behind a proxy given to
//!   `--trusted-proxy`, the one it forwarded. It tells which node serves a client behind a
//!   load balancer, and what that node takes the client's address to be.
//!
//! - `presence {"room"}`: replies with the room's members, `[{"id", "node"}]`: on every
//!   node when the server tracks the relay's presence (`crosswire serve --presence`), this
//!   node's otherwise. With presence tracked, every member of a room gets event `presence`
//!   `{"room", "id", "node", "joined"}` whenever an id joins or leaves it on any node (its
//!   socket closed, or its node died, included).
//!
//! A payload of the wrong shape is answered (when a reply was asked for) with
//! `{"ok": false, "error": "<what was wrong>"}` and sends nothing.

use std::borrow::Cow;

use crosswire::system::{Connection, PresenceJoin, PresenceLeave};
use crosswire::{Ack, Payload, PresenceEntry, RawValue, Room, Server, Socket};
use serde::{Deserialize, Serialize};

/// The namespace of relay rooms.
pub const NAMESPACE: &str = "relay";

#[derive(Deserialize)]
struct RoomName<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToRoom<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ToAll<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ToId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ToIds<'a> {
    #[serde(borrow)]
    ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The relay's answer: `{"ok": true}`, or `{"ok": false, "error": "<what was wrong>"}`.
#[derive(Serialize)]
struct Answer {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Answer {
    const OK: Answer = Answer {
        ok: true,
        error: None,
    };

    fn failed(error: String) -> Self {
        Answer {
            ok: false,
            error: Some(error),
        }
    }

    fn invalid(e: impl std::fmt::Display) -> Self {
        Self::failed(format!("invalid payload: {e}"))
    }
}

/// Parses the payload (borrowing from it), runs `f` on it, and answers.
fn relay<'a, T: Deserialize<'a>>(payload: &'a Payload, f: impl FnOnce(T)) -> Ack<Answer> {
    match payload.parse::<T>() {
        Ok(value) => {
            f(value);
            Ack(Answer::OK)
        }
        Err(e) => Ack(Answer::invalid(e)),
    }
}

fn bind_from_query(_: Connection, server: Server, socket: Socket) {
    let Some(id) = socket.query("id").filter(|id| !id.is_empty()) else {
        socket.close(crosswire::close_code::AUTH_FAILED, "id required");
        return;
    };
    if server.id_history_window().is_none() {
        server.bind(id, &socket);
        return;
    }
    let since = match (socket.query("offset"), socket.query("epoch")) {
        (Some(offset), Some(epoch)) => offset
            .parse()
            .ok()
            .map(|offset| crosswire::Position::new(offset, epoch)),
        _ => None,
    };
    let recovering = server.bind_recovering(id, &socket, since);
    tokio::spawn(async move {
        if let Ok(r) = recovering.await {
            let _ = socket.emit("recovered", &Recovered::from(r));
        }
    });
}

/// Event `recovered`, sent once the messages missed by a returning id were queued.
#[derive(Serialize)]
struct Recovered {
    stream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    recovered: bool,
}

impl From<crosswire::Recovery> for Recovered {
    fn from(r: crosswire::Recovery) -> Self {
        Self {
            stream: r.stream,
            offset: r.position.as_ref().map(|p| p.offset),
            epoch: r.position.map(|p| p.epoch.to_string()),
            recovered: r.recovered,
        }
    }
}

/// `join` with history: `{"room", "since"?}`.
#[derive(Deserialize)]
struct JoinSince {
    room: String,
    #[serde(default)]
    since: Option<Since>,
}

/// A position as a client sends it back.
#[derive(Deserialize)]
struct Since {
    offset: u64,
    epoch: String,
}

/// The answer of a `join` with history.
#[derive(Serialize)]
#[serde(untagged)]
enum Joined {
    Joined {
        ok: bool,
        #[serde(flatten)]
        position: Recovered,
    },
    Refused(Answer),
}

fn refused(error: String) -> Ack<Joined> {
    Ack(Joined::Refused(Answer::failed(error)))
}

/// Starts the recovery at once (while the socket is connected: should it close during the
/// history read, the id is not joined) and answers with the position when it is done.
fn join_recovering(
    server: Server,
    socket: Socket,
    payload: Payload,
) -> impl std::future::Future<Output = Ack<Joined>> {
    let started = match (payload.parse::<JoinSince>(), socket.id()) {
        (Err(e), _) => Err(Ack(Joined::Refused(Answer::invalid(e)))),
        (Ok(_), None) => Err(refused("not bound to an id".to_string())),
        (Ok(request), Some(id)) => {
            let since = request
                .since
                .map(|s| crosswire::Position::new(s.offset, s.epoch));
            let room = Room::new(NAMESPACE, request.room);
            Ok(server.join_recovering(&room, &id, since))
        }
    };
    async move {
        match started {
            Ok(recovering) => match recovering.await {
                Ok(r) => Ack(Joined::Joined {
                    ok: true,
                    position: Recovered::from(r),
                }),
                Err(e) => refused(e.to_string()),
            },
            Err(answer) => answer,
        }
    }
}

/// Joins at once (while the socket is connected) and answers once the broker confirmed the
/// room's subscription, so that the client gets whatever any node sends to the room after
/// the answer. Unconfirmed (the broker is down) the id has joined all the same: it is
/// answered `ok` and the lag is logged.
fn join(
    server: Server,
    socket: Socket,
    payload: Payload,
) -> impl std::future::Future<Output = Ack<Answer>> {
    let joined = match (payload.parse::<RoomName<'_>>(), socket.id()) {
        (Ok(r), Some(id)) => {
            let room = Room::new(NAMESPACE, r.room);
            Ok(Some((server.join_confirmed(&room, &id), room)))
        }
        (Ok(_), None) => Ok(None),
        (Err(e), _) => Err(Answer::invalid(e)),
    };
    async move {
        match joined {
            Ok(Some((confirmed, room))) => {
                if let Err(e) = confirmed.await {
                    tracing::warn!(room = %room, %e, "join");
                }
                Ack(Answer::OK)
            }
            Ok(None) => Ack(Answer::OK),
            Err(invalid) => Ack(invalid),
        }
    }
}

fn leave(server: Server, socket: Socket, payload: Payload) -> Ack<Answer> {
    relay(&payload, |r: RoomName<'_>| {
        if let Some(id) = socket.id() {
            server.leave(&Room::new(NAMESPACE, r.room), &id);
        }
    })
}

/// The answer of `whoami`.
#[derive(Serialize)]
struct WhoAmI {
    id: Option<String>,
    node: String,
    addr: Option<String>,
}

fn whoami(server: Server, socket: Socket) -> Ack<WhoAmI> {
    Ack(WhoAmI {
        id: socket.id(),
        node: server.node_name().to_string(),
        addr: socket.client_addr().map(|ip| ip.to_string()),
    })
}

fn to_room(server: Server, payload: Payload) -> Ack<Answer> {
    relay(&payload, |m: ToRoom<'_>| {
        let _ = server
            .to_room(Room::new(NAMESPACE, m.room))
            .emit_raw("msg", m.data);
    })
}

fn to_all(server: Server, payload: Payload) -> Ack<Answer> {
    relay(&payload, |m: ToAll<'_>| {
        let _ = server.to_all().emit_raw("msg", m.data);
    })
}

fn to_id(server: Server, payload: Payload) -> Ack<Answer> {
    relay(&payload, |m: ToId<'_>| {
        let _ = server.to(m.id).emit_raw("msg", m.data);
    })
}

fn to_ids(server: Server, payload: Payload) -> Ack<Answer> {
    relay(&payload, |m: ToIds<'_>| {
        let _ = server.to_ids(m.ids).emit_raw("msg", m.data);
    })
}

/// The answer of `presence`: the members, or what was wrong with the payload.
#[derive(Serialize)]
#[serde(untagged)]
enum Members {
    Found(Vec<PresenceEntry>),
    Invalid(Answer),
}

fn presence(server: Server, payload: Payload) -> Ack<Members> {
    Ack(match payload.parse::<RoomName<'_>>() {
        Ok(r) => Members::Found(server.presence(&Room::new(NAMESPACE, r.room))),
        Err(e) => Members::Invalid(Answer::invalid(e)),
    })
}

/// A join or leave, as the room's members get it.
#[derive(Serialize)]
struct PresenceEvent<'a> {
    room: &'a str,
    id: &'a str,
    node: &'a str,
    joined: bool,
}

impl<'a> PresenceEvent<'a> {
    fn new(room: &'a str, id: &'a str, node: &'a str, joined: bool) -> Self {
        Self {
            room,
            id,
            node,
            joined,
        }
    }
}

/// Tells this node's members of the room (every node does the same for its own).
fn tell_room(server: &Server, namespace: &str, event: PresenceEvent<'_>) {
    if namespace == NAMESPACE {
        let _ = server
            .to_room(Room::new(NAMESPACE, event.room))
            .local()
            .emit("presence", &event);
    }
}

/// Installs the relay handlers on `server`.
pub fn install(server: &Server) {
    server.on_system(bind_from_query);
    if server.history_window(NAMESPACE).is_some() {
        server.on("join", join_recovering);
    } else {
        server.on("join", join);
    }
    server.on("leave", leave);
    server.on("echo", |payload: Payload| Ack(payload));
    server.on("room", to_room);
    server.on("all", to_all);
    server.on("to", to_id);
    server.on("ids", to_ids);
    server.on("whoami", whoami);
    server.on("presence", presence);
    server.on_system(|e: PresenceJoin, server: Server| {
        let event = PresenceEvent::new(&e.room, &e.id, &e.node, true);
        tell_room(&server, &e.namespace, event);
    });
    server.on_system(|e: PresenceLeave, server: Server| {
        let event = PresenceEvent::new(&e.room, &e.id, &e.node, false);
        tell_room(&server, &e.namespace, event);
    });
}

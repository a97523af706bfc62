//! The relay contract, used by the demo, the benchmarks and outside conformance checks.
//!
//! - connect with query `id=<unique client id>`: the socket is bound to that id (a socket
//!   without one is closed with 4011);
//! - `join` / `leave` `{"room"}`: joins or leaves room `<room>` of namespace `relay`, replies
//!   `{"ok": true}`;
//! - `echo <any>`: replies with the same payload;
//! - `room {"room", "data"}`: event `msg` with `data` to every member of the room on every
//!   node; `all {"data"}`: to every socket; `to {"id", "data"}`: to one client; `ids {"ids",
//!   "data"}`: to each listed client. Each replies `{"ok": true}` when asked.
//!
//! A payload of the wrong shape is answered (when a reply was asked for) with
//! `{"ok": false, "error": "<what was wrong>"}` and sends nothing.

use std::borrow::Cow;

use crosswire::{Event, RawValue, Reply, Server};
use serde::Deserialize;

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

fn ok(reply: Option<Reply>) {
    if let Some(reply) = reply {
        let ok: &RawValue = serde_json::from_str(r#"{"ok":true}"#).unwrap_or(RawValue::NULL);
        let _ = reply.send_raw(ok);
    }
}

fn fail(reply: Option<Reply>, error: impl std::fmt::Display) {
    if let Some(reply) = reply {
        let _ = reply.send(&serde_json::json!({ "ok": false, "error": error.to_string() }));
    }
}

/// Runs `f` on the parsed payload and answers `{"ok": true}`, or answers the parse error.
fn with<'a, T: Deserialize<'a>>(ev: Event<'a>, f: impl FnOnce(&Server, T, Option<&str>)) {
    match ev.payload.parse::<T>() {
        Ok(value) => {
            let id = ev.socket.id();
            f(ev.server, value, id.as_deref());
            ok(ev.reply);
        }
        Err(e) => fail(ev.reply, format!("invalid payload: {e}")),
    }
}

/// Installs the relay handlers on `server`.
pub fn install(server: &Server) {
    server.on_connection(|server, socket| match socket.params().get("id") {
        Some(id) if !id.is_empty() => server.bind(id, socket),
        _ => socket.close(crosswire::close_code::AUTH_FAILED, "id required"),
    });
    server.on("join", |ev| {
        with(ev, |server, r: RoomName<'_>, id| {
            if let Some(id) = id {
                server.join(NAMESPACE, &r.room, id);
            }
        })
    });
    server.on("leave", |ev| {
        with(ev, |server, r: RoomName<'_>, id| {
            if let Some(id) = id {
                server.leave(NAMESPACE, &r.room, id);
            }
        })
    });
    server.on("echo", |ev| {
        if let Some(reply) = ev.reply {
            let _ = reply.send_raw(ev.payload.raw());
        }
    });
    server.on("room", |ev| {
        with(ev, |server, m: ToRoom<'_>, _| {
            let _ = server.to_room(NAMESPACE, m.room).emit_raw("msg", m.data);
        })
    });
    server.on("all", |ev| {
        with(ev, |server, m: ToAll<'_>, _| {
            let _ = server.to_all().emit_raw("msg", m.data);
        })
    });
    server.on("to", |ev| {
        with(ev, |server, m: ToId<'_>, _| {
            let _ = server.to(m.id).emit_raw("msg", m.data);
        })
    });
    server.on("ids", |ev| {
        with(ev, |server, m: ToIds<'_>, _| {
            let _ = server.to_ids(m.ids).emit_raw("msg", m.data);
        })
    });
}

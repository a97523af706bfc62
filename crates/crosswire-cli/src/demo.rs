//! The demo page of `crosswire serve` (`GET /`): pick a name and a room, chat, see who is in
//! the room (on every node), your latency from the heartbeat, the node you are connected to,
//! and reconnects as they happen. It uses only the JavaScript client (`clients/js`), served
//! from its source as `GET /crosswire.mjs`.
//!
//! The page speaks the relay contract plus two events of its own, namespaced `demo:` so they
//! never collide with an application's: `demo:hello` answers `{"node": <node name>}`, and
//! `demo:who {"room"}` answers the room's members across the cluster.

use crosswire::{Ack, Data, Room, Server};
use serde::Deserialize;

/// The page.
pub const PAGE: &str = include_str!("../assets/demo.html");

/// The JavaScript client, as an ES module.
pub const CLIENT_MODULE: &str = include_str!("../../../clients/js/src/index.js");

#[derive(Deserialize)]
struct Who {
    room: String,
}

/// Installs the `demo:` events.
pub fn install(server: &Server) {
    server.on("demo:hello", |server: Server| {
        Ack(serde_json::json!({ "node": server.node_name() }))
    });
    server.on(
        "demo:who",
        |server: Server, Data(who): Data<Who>| async move {
            let room = Room::new(crate::relay::NAMESPACE, who.room);
            Ack(server.cluster_room_members(&room).await)
        },
    );
}

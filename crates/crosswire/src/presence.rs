//! Presence: who is in the rooms of the namespaces given to
//! [`crate::ServerConfig::with_presence`], on every node.
//!
//! Each node announces the joins and leaves of its own members on the namespace's channel
//! (which every node tracking the namespace stays subscribed to) and keeps the other nodes'
//! members of those rooms beside its own, so [`Server::presence`] answers from memory in
//! O(room size). A node that leaves or expires takes its members with it; a node that joins
//! is sent every other node's members. Every change raises [`crate::system::PresenceJoin`] or
//! [`crate::system::PresenceLeave`] on every node tracking the namespace.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::handler::{erase, Data, FromNode};
use crate::node::Server;
use crate::registry::Membership;
use crate::rooms::Room;
use crate::server_events::ServerEmitOptions;

const SYNC_EVENT: &str = "crosswire:presence-sync";

/// A member of a room, and the node its id is bound on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceEntry {
    /// The member.
    pub id: String,
    /// The node it joined on.
    pub node: String,
}

/// One membership, as a joining node is sent them.
#[derive(Serialize, Deserialize)]
struct Member {
    namespace: String,
    room: String,
    id: String,
}

impl Server {
    /// The members of `room` on every node, sorted by id, when its namespace's presence is
    /// tracked ([`crate::ServerConfig::with_presence`]); this node's members only otherwise.
    /// Answered from memory, in O(room size).
    pub fn presence(&self, room: &Room) -> Vec<PresenceEntry> {
        let me = self.node_name();
        let mut all: Vec<PresenceEntry> = self
            .read_registry()
            .presence(room.namespace(), room.id())
            .into_iter()
            .map(|(id, node)| PresenceEntry {
                id: id.to_string(),
                node: node.map_or_else(|| me.to_string(), |n| n.to_string()),
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.node.cmp(&b.node)));
        all
    }

    /// Another node's member joined or left a tracked room.
    pub(crate) fn remote_presence(&self, node: &Arc<str>, change: Membership) {
        let changed = {
            let mut registry = self.write_registry();
            if !registry.is_tracked(&change.namespace) {
                return;
            }
            if change.joined {
                registry.remote_join(&change, node)
            } else {
                registry.remote_leave(&change, node)
            }
        };
        if changed {
            self.raise_presence(&change, node);
        }
    }

    /// A node left the cluster or expired: its members leave every tracked room.
    pub(crate) fn presence_node_gone(&self, node: &str) {
        if !self.read_registry().tracks_any() {
            return;
        }
        let gone = self.write_registry().remote_node_gone(node);
        for change in gone {
            self.raise_presence(&change, node);
        }
    }

    /// Sends this node's tracked members to `node`, which just joined.
    pub(crate) fn presence_sync_to(&self, node: &str) {
        let members: Vec<Member> = self
            .read_registry()
            .tracked_memberships()
            .into_iter()
            .map(|m| Member {
                namespace: m.namespace.to_string(),
                room: m.room.to_string(),
                id: m.id.to_string(),
            })
            .collect();
        if members.is_empty() {
            return;
        }
        let options = ServerEmitOptions::new().to([node]).except_self();
        if let Err(e) = self.emit_server(SYNC_EVENT, &members, &options) {
            tracing::debug!(error = %e, node, "presence not sent to a joining node");
        }
    }

    /// Installs the handler of the members a joining node is sent.
    pub(crate) fn install_presence(&self) {
        let sync = |server: Server, FromNode(from): FromNode, Data(members): Data<Vec<Member>>| {
            let node: Arc<str> = Arc::from(from);
            for m in members {
                let change = Membership {
                    namespace: m.namespace.into(),
                    room: m.room.into(),
                    id: m.id.into(),
                    joined: true,
                };
                server.remote_presence(&node, change);
            }
        };
        self.inner
            .server_events
            .add(SYNC_EVENT, erase(sync), None, false);
    }
}

//! Looking into the cluster: where an id is connected and what its socket's counters say,
//! a summary of every node (connections, traffic, broker health, largest rooms), and closing
//! an id's socket on whichever node holds it. Each is a built-in server-to-server query, so
//! every node answers for itself; an operator's dashboard (`crosswire serve --admin-token`)
//! is built on them.

use serde::{Deserialize, Serialize};

use crate::handler::{erase, Ack, Data};
use crate::node::Server;
use crate::registry::Match;
use crate::rooms::Room;
use crate::server_events::ServerEmitOptions;
use crate::socket::SocketInfo;
use crate::stats::Stats;

const QUERY_INSPECT: &str = "crosswire:inspect";
const QUERY_SUMMARY: &str = "crosswire:summary";
const QUERY_DISCONNECT: &str = "crosswire:disconnect";
const QUERY_ROOM_SIZES: &str = "crosswire:room-sizes";

/// Most rooms a [`NodeSummary`] lists.
pub(crate) const MAX_TOP_ROOMS: usize = 100;

/// Where an id is connected: its node, its socket's counters, and its rooms there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Located {
    /// The node holding the socket.
    pub node: String,
    /// The socket's counters and state.
    pub socket: SocketInfo,
    /// The rooms the id joined.
    pub rooms: Vec<Room>,
}

/// A room and its number of members (on one node, or summed over the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoomSize {
    /// The room.
    pub room: Room,
    /// Its members.
    pub size: usize,
}

/// One broker server (a Redis node) as a node sees it, in a [`NodeSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BrokerNodeSummary {
    /// The server's name.
    pub name: String,
    /// Publish and subscribe connections both up.
    pub healthy: bool,
    /// Round trip of its last PING, in milliseconds.
    pub ping_ms: Option<f64>,
    /// Messages published through it.
    pub published: u64,
    /// Messages whose publish failed on it.
    pub publish_failures: u64,
    /// Messages received from it.
    pub received: u64,
}

/// What a node reports of itself: from [`Server::node_summary`], or every node's from
/// [`Server::cluster_summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeSummary {
    /// The node's name.
    pub node: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When this summary was taken, in milliseconds since the Unix epoch (rates are the
    /// difference of two summaries over the difference of their times).
    pub at_ms: u64,
    /// Its counters.
    pub stats: Stats,
    /// Whether its broker can publish and receive (`None` on a single node).
    pub broker_healthy: Option<bool>,
    /// Its broker's servers.
    pub broker_nodes: Vec<BrokerNodeSummary>,
    /// Its largest rooms by local members, largest first. In a [`Server::cluster_summary`],
    /// every room that is among the largest of any node, with this node's members of it (the
    /// rooms it has no member of left out), so that the sizes add up across the nodes.
    pub rooms: Vec<RoomSize>,
}

impl Server {
    /// Where `id` is connected on this node, with its socket's counters and rooms.
    pub fn inspect_local(&self, id: &str) -> Option<Located> {
        let socket = self.socket(id)?;
        Some(Located {
            node: self.node_name().to_string(),
            socket: socket.info(),
            rooms: self.rooms_of(id, None),
        })
    }

    /// Where `id` is connected in the cluster, with its socket's counters and rooms (asks
    /// every other node when it is not here; `None` when no node answers with it within the
    /// server request timeout).
    pub async fn inspect(&self, id: &str) -> Option<Located> {
        if let Some(found) = self.inspect_local(id) {
            return Some(found);
        }
        let options = ServerEmitOptions::new().except_self();
        self.first_reply(QUERY_INSPECT, id, options, Option::is_some)
            .await
            .and_then(|(_, found): (String, Option<Located>)| found)
    }

    /// This node's summary, with its `top_rooms` largest rooms (at most 100).
    pub fn node_summary(&self, top_rooms: usize) -> NodeSummary {
        let broker_nodes = self
            .broker_node_stats()
            .into_iter()
            .map(|b| BrokerNodeSummary {
                name: b.name.to_string(),
                healthy: b.publisher_healthy && b.subscriber_healthy,
                ping_ms: b.ping_latency.map(|d| d.as_secs_f64() * 1e3),
                published: b.published,
                publish_failures: b.publish_failures,
                received: b.received,
            })
            .collect();
        NodeSummary {
            node: self.node_name().to_string(),
            started_at_ms: self.inner.started_at_ms,
            at_ms: crate::socket::unix_ms(),
            stats: self.stats(),
            broker_healthy: self.broker_health().map(|h| h.healthy),
            broker_nodes,
            rooms: self.largest_rooms(top_rooms.min(MAX_TOP_ROOMS)),
        }
    }

    /// Every live node's summary (this one's included), sorted by node name; a node that
    /// does not answer within the server request timeout is left out. Each node's `rooms`
    /// hold its members of every room among any node's `top_rooms` largest, so a room's
    /// size in the cluster is the sum over the nodes.
    pub async fn cluster_summary(&self, top_rooms: usize) -> Vec<NodeSummary> {
        let mut all = vec![self.node_summary(top_rooms)];
        let options = ServerEmitOptions::new().except_self();
        if let Ok(replies) = self.request_server(QUERY_SUMMARY, &top_rooms, options) {
            let results = replies.collect().await;
            all.extend(
                results
                    .responses
                    .values()
                    .filter_map(|raw| serde_json::from_str(raw.get()).ok()),
            );
        }
        all.sort_by(|a, b| a.node.cmp(&b.node));
        if all.len() > 1 {
            self.fill_room_sizes(&mut all).await;
        }
        all
    }

    /// Replaces each summary's rooms with its node's members of every room listed by any
    /// summary (a second round: one node's largest room may be small, but not absent, on
    /// another).
    async fn fill_room_sizes(&self, all: &mut [NodeSummary]) {
        let rooms: Vec<Room> = all
            .iter()
            .flat_map(|s| s.rooms.iter().map(|r| r.room.clone()))
            .collect::<std::collections::BTreeSet<Room>>()
            .into_iter()
            .collect();
        if rooms.is_empty() {
            return;
        }
        let options = ServerEmitOptions::new().except_self();
        let Ok(replies) = self.request_server(QUERY_ROOM_SIZES, &rooms, options) else {
            return;
        };
        let mut sizes = replies.collect().await.responses;
        for summary in all.iter_mut() {
            let found = if summary.node == self.node_name() {
                Some(self.local_room_sizes(&rooms))
            } else {
                sizes
                    .remove(&summary.node)
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
            };
            if let Some(found) = found {
                summary.rooms = found;
            }
        }
    }

    /// This node's members of each of `rooms` (those it has members of), largest first.
    fn local_room_sizes(&self, rooms: &[Room]) -> Vec<RoomSize> {
        let mut sizes: Vec<RoomSize> = rooms
            .iter()
            .take(MAX_TOP_ROOMS * 64)
            .map(|room| RoomSize {
                room: room.clone(),
                size: self.room_size(room),
            })
            .filter(|r| r.size > 0)
            .collect();
        sizes.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.room.cmp(&b.room)));
        sizes
    }

    /// Closes `id`'s socket with `code` and `reason` on whichever node holds it. True when a
    /// node had it.
    pub async fn disconnect(&self, id: &str, code: u16, reason: &str) -> bool {
        if let Some(socket) = self.socket(id) {
            socket.close(code, reason);
            return true;
        }
        let args = Disconnect {
            id: id.to_string(),
            code,
            reason: reason.to_string(),
        };
        let options = ServerEmitOptions::new().except_self();
        self.first_reply(QUERY_DISCONNECT, &args, options, |had: &bool| *had)
            .await
            .is_some()
    }

    /// The `n` local rooms with the most members, largest first (ties by name).
    fn largest_rooms(&self, n: usize) -> Vec<RoomSize> {
        if n == 0 {
            return Vec::new();
        }
        let mut rooms = self.find_rooms("", Match::Prefix, "", Match::Prefix);
        let by_size = |a: &(Room, usize), b: &(Room, usize)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if rooms.len() > n {
            rooms.select_nth_unstable_by(n - 1, by_size);
            rooms.truncate(n);
        }
        rooms.sort_unstable_by(by_size);
        rooms
            .into_iter()
            .map(|(room, size)| RoomSize { room, size })
            .collect()
    }

    /// Installs the handlers of the inspection queries.
    pub(crate) fn install_inspection(&self) {
        let table = &self.inner.server_events;
        let inspect = |server: Server, Data(id): Data<String>| Ack(server.inspect_local(&id));
        table.add(QUERY_INSPECT, erase(inspect), None, false);
        let summary = |server: Server, Data(n): Data<usize>| Ack(server.node_summary(n));
        table.add(QUERY_SUMMARY, erase(summary), None, false);
        let disconnect = |server: Server, Data(d): Data<Disconnect>| {
            let socket = server.socket(&d.id);
            if let Some(socket) = &socket {
                socket.close(d.code, &d.reason);
            }
            Ack(socket.is_some())
        };
        table.add(QUERY_DISCONNECT, erase(disconnect), None, false);
        let sizes =
            |server: Server, Data(rooms): Data<Vec<Room>>| Ack(server.local_room_sizes(&rooms));
        table.add(QUERY_ROOM_SIZES, erase(sizes), None, false);
    }
}

/// The arguments of a cluster-wide disconnect.
#[derive(Serialize, Deserialize)]
struct Disconnect {
    id: String,
    code: u16,
    reason: String,
}

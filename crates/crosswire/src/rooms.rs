//! Rooms: the [`Room`] name, joining and leaving, and the queries of this node's rooms.
//!
//! Rooms hold ids, not sockets, as in the seed: a socket is in a room through the id it is
//! bound to, and leaves every room when its id is unbound on disconnect.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::JoinError;
use crate::node::Server;
use crate::registry::{Match, Membership, NamespaceChange, Registry};
use crate::socket::Socket;
use crate::system::{PresenceJoin, PresenceLeave};
use crosswire_protocol::envelope::Body;

/// A room's name: a namespace (e.g. `chat`, `game:hot`) and a room id within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Room {
    namespace: String,
    id: String,
}

impl Room {
    /// Room `id` of `namespace`.
    pub fn new(namespace: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            id: id.into(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The room id within the namespace.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn into_parts(self) -> (String, String) {
        (self.namespace, self.id)
    }
}

impl std::fmt::Display for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

impl From<&Room> for Room {
    fn from(room: &Room) -> Self {
        room.clone()
    }
}

/// What a change of room memberships leaves to follow up once the registry is released.
pub(crate) struct RoomChanges {
    members: Vec<Membership>,
}

impl Server {
    // ----- ids -----

    /// Binds `id` (unique across the cluster) to `socket`. A socket already bound to `id` —
    /// on this node or another — is closed with the takeover code (default 4012).
    pub fn bind(&self, id: &str, socket: &Socket) {
        let id: Arc<str> = Arc::from(id);
        // The claim is on the socket before the id points at it: a takeover from another
        // node handled in between compares against it, never against none.
        let claim = self.inner.cluster.as_ref().map(|cluster| {
            let floor = self
                .read_registry()
                .get(&id)
                .map_or(0, |old| old.claim.load(Ordering::Acquire));
            let claim = cluster.claim_for(&id, floor);
            socket.shared.claim.store(claim, Ordering::Release);
            claim
        });
        let previous = self.write_registry().bind(Arc::clone(&id), &socket.shared);
        if let Some(old) = previous {
            tracing::debug!(id = %id, "id taken over by a new connection");
            old.request_close(
                self.inner.config.takeover_close_code,
                "taken over by a new connection",
            );
            self.leave_recorded_rooms(&id);
        }
        if let (Some(cluster), Some(claim)) = (&self.inner.cluster, claim) {
            cluster.announce_takeover(&id, claim, socket.shared.conn_id);
        }
    }

    /// A new socket took `id` over on this node: it leaves the rooms that keep history, so
    /// the client re-joins them with its position ([`Server::join_recovering`]) instead of
    /// getting live messages before the ones it missed.
    fn leave_recorded_rooms(&self, id: &str) {
        let history = &self.inner.history;
        if !history.is_on() {
            return;
        }
        let rooms: Vec<Room> = self
            .rooms_of(id, None)
            .into_iter()
            .filter(|r| history.window(r.namespace()).is_some())
            .collect();
        for room in rooms {
            self.leave(&room, id);
        }
    }

    /// Removes the binding of `id` (its rooms are left as they are). Returns whether it
    /// was bound on this node.
    pub fn unbind(&self, id: &str) -> bool {
        let unbound = self.unbind_quiet(id);
        if unbound {
            if let Some(cluster) = &self.inner.cluster {
                cluster.announce_gone(id);
            }
        }
        unbound
    }

    /// Unbinds without telling the other nodes (the id moved to one of them).
    pub(crate) fn unbind_quiet(&self, id: &str) -> bool {
        self.write_registry().unbind(id, None).is_some()
    }

    /// Adds `id` to `room`.
    pub fn join(&self, room: &Room, id: &str) {
        self.change_rooms(|registry| [registry.join(&room.namespace, &room.id, id)]);
    }

    /// Adds `id` to `room` like [`Server::join`], at once, when this is called; the returned
    /// future resolves when what any node sends to the room from then on reaches this node:
    /// when the broker has confirmed the subscription the room needs here (its namespace's,
    /// on the first local room of a namespace that is not preset; the room's own, with
    /// [`crate::ServerConfig::with_room_channels`]). Without a broker, or when the room's
    /// channel is always subscribed, it is ready at once.
    ///
    /// A client told "joined" only once the future resolves gets every message sent to the
    /// room after that, from whichever node. Call it from the handler itself, before any
    /// `.await` of its own (the handler may return the future), so that the join happens
    /// while the socket is connected: an async handler's body runs later, when the socket
    /// may have closed and left its rooms. The membership holds either way: on
    /// [`JoinError::Unconfirmed`] (the broker is down, counted in
    /// [`crate::Stats::unconfirmed_joins`]) messages from other nodes reach the room's
    /// members here once the broker is back and the subscription is made.
    ///
    /// ```no_run
    /// use crosswire::{Ack, Room, Server, Socket};
    ///
    /// fn join(server: Server, socket: Socket) -> impl std::future::Future<Output = Ack<bool>> {
    ///     let joined = socket
    ///         .id()
    ///         .map(|id| server.join_confirmed(&Room::new("chat", "lobby"), &id));
    ///     async move {
    ///         match joined {
    ///             Some(joined) => Ack(joined.await.is_ok()),
    ///             None => Ack(false),
    ///         }
    ///     }
    /// }
    /// # fn install(server: &Server) { server.on("join", join); }
    /// ```
    pub fn join_confirmed(
        &self,
        room: &Room,
        id: &str,
    ) -> impl std::future::Future<Output = Result<(), JoinError>> + Send + 'static {
        self.join(room, id);
        let server = self.clone();
        let room = room.clone();
        async move {
            let Some(cluster) = &server.inner.cluster else {
                return Ok(());
            };
            let always_subscribed = !cluster.has_room_channels(&room.namespace)
                && server.inner.preset.contains(&room.namespace);
            if always_subscribed {
                return Ok(());
            }
            cluster
                .confirm_room_subscribed(&room.namespace, &room.id)
                .await
                .map_err(|_| {
                    let stats = &server.inner.stats;
                    stats.unconfirmed_joins.fetch_add(1, Ordering::Relaxed);
                    JoinError::Unconfirmed
                })
        }
    }

    /// Removes `id` from `room`.
    pub fn leave(&self, room: &Room, id: &str) {
        self.change_rooms(|registry| [registry.leave(&room.namespace, &room.id, id)]);
    }

    /// Removes `id` from every room.
    pub fn leave_all(&self, id: &str) {
        self.change_rooms(|registry| registry.leave_all(id));
    }

    /// Removes a room on this node and, in a cluster, on every node.
    pub fn remove_room(&self, room: &Room) {
        self.remove_room_local(&room.namespace, &room.id);
        if let Some(cluster) = &self.inner.cluster {
            cluster.publish_remove_room(&room.namespace, &room.id);
        }
    }

    pub(crate) fn remove_room_local(&self, namespace: &str, room: &str) {
        self.change_rooms(|registry| [registry.remove_room(namespace, room)]);
    }

    /// Changes room memberships under the registry's lock with `change`, follows the
    /// namespaces and rooms it added or emptied with the broker subscriptions, tells the other
    /// nodes of the presence changes, and, with the lock released, raises them here.
    pub(crate) fn change_rooms<C>(&self, change: impl FnOnce(&mut Registry) -> C)
    where
        C: IntoIterator<Item = NamespaceChange>,
    {
        let changes = self.change_rooms_locked(change);
        self.rooms_changed(changes);
    }

    /// The first half of [`Server::change_rooms`]: changes memberships under the registry's
    /// lock, queues the subscriptions and presence announcements they call for, and returns what
    /// [`Server::rooms_changed`] must follow up, for callers that hold another lock meanwhile
    /// (nothing here raises events).
    ///
    /// These are queued before the lock is released (the queue never blocks), so they reach
    /// the broker in the order the registry changed: a room's last member leaving
    /// on one thread and its next first member joining on another cannot swap their
    /// unsubscribe and subscribe, leaving a member with no subscription.
    pub(crate) fn change_rooms_locked<C>(
        &self,
        change: impl FnOnce(&mut Registry) -> C,
    ) -> RoomChanges
    where
        C: IntoIterator<Item = NamespaceChange>,
    {
        let mut registry = self.write_registry();
        for namespace in change(&mut registry) {
            self.namespace_changed(namespace);
        }
        self.follow_room_events(registry.take_room_events());
        let members = registry.take_changes();
        self.publish_presence(&members);
        RoomChanges { members }
    }

    /// Subscribes to the channels of rooms that got their first local member, unsubscribes
    /// (with `auto_unsubscribe`) from those of rooms that lost their last.
    fn follow_room_events(&self, events: Vec<crate::registry::RoomEvent>) {
        let Some(cluster) = &self.inner.cluster else {
            return;
        };
        for event in events {
            if event.added {
                cluster.subscribe_room(&event.namespace, &event.room);
            } else if self.inner.config.auto_unsubscribe {
                cluster.unsubscribe_room(&event.namespace, &event.room);
            }
        }
    }

    /// The second half of [`Server::change_rooms`]: raises the presence changes here (the
    /// other nodes were told under the lock).
    pub(crate) fn rooms_changed(&self, changes: RoomChanges) {
        self.raise_own_presence(changes.members);
    }

    /// Tells the other nodes of this node's tracked joins and leaves; under the registry's
    /// lock, so that they go out in the order they happened.
    fn publish_presence(&self, changes: &[Membership]) {
        let Some(cluster) = &self.inner.cluster else {
            return;
        };
        for change in changes {
            let channel: Arc<str> = cluster.channels.room(&change.namespace).into();
            cluster.publish(
                channel,
                Body::Presence {
                    namespace: change.namespace.to_string(),
                    room: change.room.to_string(),
                    id: change.id.to_string(),
                    joined: change.joined,
                },
            );
        }
    }

    /// Raises this node's tracked joins and leaves here (after the registry's lock: the
    /// handlers may use it).
    fn raise_own_presence(&self, changes: Vec<Membership>) {
        if changes.is_empty() {
            return;
        }
        let me = self.node_name().to_string();
        for change in changes {
            self.raise_presence(&change, &me);
        }
    }

    /// Raises the system event of a tracked join or leave (of `node`'s member).
    pub(crate) fn raise_presence(&self, change: &Membership, node: &str) {
        let (namespace, room, id) = (
            change.namespace.to_string(),
            change.room.to_string(),
            change.id.to_string(),
        );
        let node = node.to_string();
        if change.joined {
            self.emit_system(
                &PresenceJoin {
                    namespace,
                    room,
                    id,
                    node,
                },
                None,
            );
        } else {
            self.emit_system(
                &PresenceLeave {
                    namespace,
                    room,
                    id,
                    node,
                },
                None,
            );
        }
    }

    /// Keeps the broker subscriptions in step with the namespaces that have local rooms.
    pub(crate) fn namespace_changed(&self, change: NamespaceChange) {
        let Some(cluster) = &self.inner.cluster else {
            return;
        };
        if self.inner.config.room_channels {
            // Rooms have channels of their own; preset namespaces stay subscribed anyway.
            return;
        }
        match change {
            NamespaceChange::None => {}
            NamespaceChange::Added(ns) => {
                if !self.inner.preset.contains(&*ns) {
                    cluster.subscribe_namespace(&ns);
                }
            }
            NamespaceChange::Removed(ns) => {
                if self.inner.config.auto_unsubscribe && !self.inner.preset.contains(&*ns) {
                    cluster.unsubscribe_namespace(&ns);
                }
            }
        }
    }

    /// Local members of `room`.
    pub fn room_members(&self, room: &Room) -> Vec<String> {
        self.read_registry()
            .room_members(&room.namespace, &room.id)
            .map(|m| m.keys().map(|id| id.to_string()).collect())
            .unwrap_or_default()
    }

    /// Number of local members of `room`.
    pub fn room_size(&self, room: &Room) -> usize {
        self.read_registry()
            .room_members(&room.namespace, &room.id)
            .map_or(0, |m| m.len())
    }

    /// Whether `id` is in `room` on this node.
    pub fn is_joined(&self, room: &Room, id: &str) -> bool {
        self.read_registry()
            .room_members(&room.namespace, &room.id)
            .is_some_and(|m| m.contains_key(id))
    }

    /// Distinct local ids in every room of the namespaces matching `namespace`.
    pub fn namespace_members(&self, namespace: &str, matching: Match) -> Vec<String> {
        self.read_registry()
            .namespace_members(namespace, matching)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Number of distinct local ids in the namespaces matching `namespace`.
    pub fn namespace_size(&self, namespace: &str, matching: Match) -> usize {
        self.read_registry()
            .namespace_members(namespace, matching)
            .len()
    }

    /// The local rooms of the namespaces matching `namespace`.
    pub fn rooms(&self, namespace: &str, matching: Match) -> Vec<Room> {
        self.find_rooms(namespace, matching, "", Match::Prefix)
            .into_iter()
            .map(|(room, _)| room)
            .collect()
    }

    /// Number of local rooms in the namespaces matching `namespace`.
    pub fn room_count(&self, namespace: &str, matching: Match) -> usize {
        self.read_registry()
            .rooms_matching(namespace, matching, "", Match::Prefix)
            .len()
    }

    /// Local rooms whose id matches `room` (exact or prefix) in the namespaces matching
    /// `namespace`, with their member counts.
    pub fn find_rooms(
        &self,
        namespace: &str,
        ns_matching: Match,
        room: &str,
        room_matching: Match,
    ) -> Vec<(Room, usize)> {
        self.read_registry()
            .rooms_matching(namespace, ns_matching, room, room_matching)
            .into_iter()
            .map(|(n, r, c)| (Room::new(&*n, &*r), c))
            .collect()
    }

    /// The rooms `id` joined on this node, optionally only in namespaces starting with
    /// `namespace_prefix`.
    pub fn rooms_of(&self, id: &str, namespace_prefix: Option<&str>) -> Vec<Room> {
        self.read_registry()
            .rooms_of(id)
            .iter()
            .filter(|(n, _)| namespace_prefix.is_none_or(|p| n.starts_with(p)))
            .map(|(n, r)| Room::new(&**n, &**r))
            .collect()
    }
}

//! This node's sockets, id bindings and rooms.
//!
//! Rooms hold ids, not sockets, as in the seed: `join_room(namespace, room, id)`; each member
//! also keeps the handle of the local socket its id is bound to (kept in step by `bind`,
//! `unbind` and takeovers), so a room delivery goes straight from member to socket. The
//! registry stores handles (`Arc`s), behind one std `RwLock`: every critical section is a few
//! map operations with no `.await` inside, so a std lock is cheaper than an async one and
//! cannot be held across a suspension point.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::socket::SocketShared;

/// How a namespace or room name is matched in queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Match {
    /// The name must be equal.
    #[default]
    Exact,
    /// The name must start with the given string.
    Prefix,
}

impl Match {
    fn matches(self, name: &str, pattern: &str) -> bool {
        match self {
            Match::Exact => name == pattern,
            Match::Prefix => name.starts_with(pattern),
        }
    }
}

/// A room's members: id → the local socket bound to it, if any.
type Members = HashMap<Arc<str>, Option<Arc<SocketShared>>>;
/// A (namespace, room) pair.
type RoomKey = (Arc<str>, Arc<str>);

#[derive(Default)]
pub(crate) struct Registry {
    /// Every local connection, bound or not.
    pub(crate) conns: HashMap<u64, Arc<SocketShared>>,
    /// Bound ids.
    pub(crate) ids: HashMap<Arc<str>, Arc<SocketShared>>,
    /// namespace → room → ids.
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, Members>>,
    /// id → (namespace, room) it joined.
    joined: HashMap<Arc<str>, Vec<RoomKey>>,
    /// The namespaces whose memberships are tracked across the cluster (presence).
    tracked: HashSet<String>,
    /// Joins and leaves of tracked namespaces not yet announced.
    changes: Vec<Membership>,
    /// Members of tracked rooms on other nodes: room → id → node.
    remote: HashMap<RoomKey, HashMap<Arc<str>, Arc<str>>>,
    /// With one broker channel per room: the namespaces that keep one channel for all their
    /// rooms instead (the preset ones); the rooms of the others are reported.
    room_channels: Option<HashSet<String>>,
    /// Rooms (of namespaces with a channel per room) that got their first local member
    /// (`true`) or lost their last (`false`), not yet followed with the broker.
    room_events: Vec<RoomEvent>,
}

/// A room with a broker channel of its own got its first local member or lost its last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomEvent {
    pub(crate) namespace: Arc<str>,
    pub(crate) room: Arc<str>,
    /// `true`: first member; `false`: last one gone.
    pub(crate) added: bool,
}

/// An id joined or left a room of a tracked namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) namespace: Arc<str>,
    pub(crate) room: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) joined: bool,
}

/// A change in which namespaces have local members, for broker subscriptions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NamespaceChange {
    None,
    /// The namespace got its first local room.
    Added(Arc<str>),
    /// The namespace lost its last local room.
    Removed(Arc<str>),
}

impl Registry {
    /// An empty registry tracking the memberships of `namespaces` for presence.
    pub(crate) fn tracking(namespaces: impl IntoIterator<Item = String>) -> Self {
        Self {
            tracked: namespaces.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether `namespace`'s memberships are tracked across the cluster.
    pub(crate) fn is_tracked(&self, namespace: &str) -> bool {
        self.tracked.contains(namespace)
    }

    /// The tracked joins and leaves since the last call, in order.
    pub(crate) fn take_changes(&mut self) -> Vec<Membership> {
        std::mem::take(&mut self.changes)
    }

    /// Reports rooms as they gain their first and lose their last local member, except in
    /// the namespaces of `shared` (one broker channel per room, but for those).
    pub(crate) fn with_room_channels(mut self, shared: HashSet<String>) -> Self {
        self.room_channels = Some(shared);
        self
    }

    /// The rooms that got their first or lost their last local member since the last call.
    pub(crate) fn take_room_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.room_events)
    }

    /// Records that `room` got its first (`added`) or lost its last local member, when its
    /// namespace has a channel per room.
    fn room_event(&mut self, namespace: &Arc<str>, room: &Arc<str>, added: bool) {
        if self
            .room_channels
            .as_ref()
            .is_some_and(|shared| !shared.contains(&**namespace))
        {
            self.room_events.push(RoomEvent {
                namespace: Arc::clone(namespace),
                room: Arc::clone(room),
                added,
            });
        }
    }

    /// Records a join or leave for presence, when `namespace` is tracked.
    fn track(&mut self, namespace: &str, room: &str, id: &Arc<str>, joined: bool) {
        if self.tracked.contains(namespace) {
            self.changes.push(Membership {
                namespace: Arc::from(namespace),
                room: Arc::from(room),
                id: Arc::clone(id),
                joined,
            });
        }
    }

    /// Records a member of a tracked room on `node`; whether it is new.
    pub(crate) fn remote_join(&mut self, m: &Membership, node: &Arc<str>) -> bool {
        let key = (Arc::clone(&m.namespace), Arc::clone(&m.room));
        let members = self.remote.entry(key).or_default();
        members.insert(Arc::clone(&m.id), Arc::clone(node)).as_ref() != Some(node)
    }

    /// Removes a member of a tracked room on `node`; whether it was there.
    pub(crate) fn remote_leave(&mut self, m: &Membership, node: &str) -> bool {
        let key = (Arc::clone(&m.namespace), Arc::clone(&m.room));
        let Some(members) = self.remote.get_mut(&key) else {
            return false;
        };
        if members.get(&m.id).is_none_or(|n| &**n != node) {
            return false;
        }
        members.remove(&m.id);
        if members.is_empty() {
            self.remote.remove(&key);
        }
        true
    }

    /// Removes every member on `node` (it left the cluster); what was removed.
    pub(crate) fn remote_node_gone(&mut self, node: &str) -> Vec<Membership> {
        let mut gone = Vec::new();
        self.remote.retain(|(namespace, room), members| {
            members.retain(|id, n| {
                let keep = &**n != node;
                if !keep {
                    gone.push(Membership {
                        namespace: Arc::clone(namespace),
                        room: Arc::clone(room),
                        id: Arc::clone(id),
                        joined: false,
                    });
                }
                keep
            });
            !members.is_empty()
        });
        gone
    }

    /// Every member of a tracked room, here and on other nodes: (id, node or `None` here).
    pub(crate) fn presence(
        &self,
        namespace: &str,
        room: &str,
    ) -> Vec<(Arc<str>, Option<Arc<str>>)> {
        let mut all: Vec<(Arc<str>, Option<Arc<str>>)> = self
            .room_members(namespace, room)
            .map(|m| m.keys().map(|id| (Arc::clone(id), None)).collect())
            .unwrap_or_default();
        let key: (Arc<str>, Arc<str>) = (Arc::from(namespace), Arc::from(room));
        if let Some(remote) = self.remote.get(&key) {
            all.extend(
                remote
                    .iter()
                    .map(|(id, n)| (Arc::clone(id), Some(Arc::clone(n)))),
            );
        }
        all
    }

    /// The local memberships of the tracked namespaces (for a node that just joined).
    pub(crate) fn tracked_memberships(&self) -> Vec<Membership> {
        let mut all = Vec::new();
        for namespace in &self.tracked {
            let Some((namespace, rooms)) = self.rooms.get_key_value(namespace.as_str()) else {
                continue;
            };
            for (room, members) in rooms {
                all.extend(members.keys().map(|id| Membership {
                    namespace: Arc::clone(namespace),
                    room: Arc::clone(room),
                    id: Arc::clone(id),
                    joined: true,
                }));
            }
        }
        all
    }

    /// Whether any namespace is tracked for presence.
    pub(crate) fn tracks_any(&self) -> bool {
        !self.tracked.is_empty()
    }

    pub(crate) fn insert_conn(&mut self, socket: Arc<SocketShared>) {
        self.conns.insert(socket.conn_id, socket);
    }

    /// Binds `id` to `socket`; returns the socket previously bound to it, if another one.
    pub(crate) fn bind(
        &mut self,
        id: Arc<str>,
        socket: &Arc<SocketShared>,
    ) -> Option<Arc<SocketShared>> {
        socket
            .ever_bound
            .store(true, std::sync::atomic::Ordering::Release);
        let previous_id = {
            let mut slot = crate::sync::lock(&socket.id);
            slot.replace(Arc::clone(&id))
        };
        if let Some(prev) = previous_id {
            if prev != id {
                if let Some(s) = self.ids.get(&prev) {
                    if Arc::ptr_eq(s, socket) {
                        self.ids.remove(&prev);
                        self.set_member_sockets(&prev, None);
                    }
                }
            }
        }
        self.set_member_sockets(&id, Some(socket));
        match self.ids.insert(id, Arc::clone(socket)) {
            Some(old) if !Arc::ptr_eq(&old, socket) => {
                *crate::sync::lock(&old.id) = None;
                Some(old)
            }
            _ => None,
        }
    }

    /// Removes a binding (only if it still points at `conn_id`, when given).
    pub(crate) fn unbind(&mut self, id: &str, conn_id: Option<u64>) -> Option<Arc<SocketShared>> {
        let matches = match (self.ids.get(id), conn_id) {
            (Some(s), Some(c)) => s.conn_id == c,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !matches {
            return None;
        }
        let s = self.ids.remove(id)?;
        *crate::sync::lock(&s.id) = None;
        self.set_member_sockets(id, None);
        Some(s)
    }

    /// Points `id`'s memberships at `socket` (or at none).
    fn set_member_sockets(&mut self, id: &str, socket: Option<&Arc<SocketShared>>) {
        let Some(list) = self.joined.get(id) else {
            return;
        };
        for (namespace, room) in list {
            let member = self
                .rooms
                .get_mut(namespace)
                .and_then(|rooms| rooms.get_mut(room))
                .and_then(|members| members.get_mut(id));
            if let Some(slot) = member {
                *slot = socket.cloned();
            }
        }
    }

    /// Removes a closed connection: its binding (if still its own) and the id's rooms.
    /// Returns the namespace changes and the id that was unbound.
    pub(crate) fn remove_conn(
        &mut self,
        socket: &SocketShared,
    ) -> (Vec<NamespaceChange>, Option<Arc<str>>) {
        self.conns.remove(&socket.conn_id);
        let Some(id) = socket.bound_id() else {
            return (Vec::new(), None);
        };
        let still_bound = self
            .ids
            .get(&id)
            .is_some_and(|s| s.conn_id == socket.conn_id);
        if !still_bound {
            // Taken over by a newer connection: the rooms belong to it now.
            return (Vec::new(), None);
        }
        self.ids.remove(&id);
        (self.leave_all(&id), Some(id))
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<SocketShared>> {
        self.ids.get(id)
    }

    pub(crate) fn join(&mut self, namespace: &str, room: &str, id: &str) -> NamespaceChange {
        let (id, socket): (Arc<str>, _) = match self.ids.get_key_value(id) {
            Some((k, s)) => (Arc::clone(k), Some(Arc::clone(s))),
            None => (Arc::from(id), None),
        };
        let (ns_key, new_ns) = match self.rooms.get_key_value(namespace) {
            Some((k, _)) => (Arc::clone(k), false),
            None => (Arc::from(namespace), true),
        };
        let rooms = self.rooms.entry(Arc::clone(&ns_key)).or_default();
        let (room_key, new_room) = match rooms.get_key_value(room) {
            Some((k, _)) => (Arc::clone(k), false),
            None => (Arc::from(room), true),
        };
        let inserted = match rooms
            .entry(Arc::clone(&room_key))
            .or_default()
            .entry(Arc::clone(&id))
        {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(socket);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        };
        if new_room {
            self.room_event(&ns_key, &room_key, true);
        }
        if inserted {
            self.track(&ns_key, &room_key, &id, true);
            self.joined
                .entry(id)
                .or_default()
                .push((Arc::clone(&ns_key), room_key));
        }
        if new_ns {
            NamespaceChange::Added(ns_key)
        } else {
            NamespaceChange::None
        }
    }

    pub(crate) fn leave(&mut self, namespace: &str, room: &str, id: &str) -> NamespaceChange {
        if let Some(list) = self.joined.get_mut(id) {
            list.retain(|(n, r)| !(&**n == namespace && &**r == room));
            if list.is_empty() {
                self.joined.remove(id);
            }
        }
        self.remove_member(namespace, room, id)
    }

    fn remove_member(&mut self, namespace: &str, room: &str, id: &str) -> NamespaceChange {
        let Some(rooms) = self.rooms.get_mut(namespace) else {
            return NamespaceChange::None;
        };
        let mut left = None;
        let mut gone = None;
        if let Some(members) = rooms.get_mut(room) {
            left = members.remove_entry(id).map(|(id, _)| id);
            if members.is_empty() {
                gone = rooms.remove_entry(room).map(|(k, _)| k);
            }
        }
        let emptied = rooms.is_empty();
        if let Some(gone) = gone {
            let namespace: Arc<str> = Arc::from(namespace);
            self.room_event(&namespace, &gone, false);
        }
        if let Some(id) = left {
            self.track(namespace, room, &id, false);
        }
        if emptied {
            if let Some((k, _)) = self.rooms.remove_entry(namespace) {
                return NamespaceChange::Removed(k);
            }
        }
        NamespaceChange::None
    }

    pub(crate) fn leave_all(&mut self, id: &str) -> Vec<NamespaceChange> {
        let Some(list) = self.joined.remove(id) else {
            return Vec::new();
        };
        list.iter()
            .map(|(n, r)| self.remove_member(n, r, id))
            .filter(|c| *c != NamespaceChange::None)
            .collect()
    }

    /// Removes a room; returns its former members and the namespace change.
    pub(crate) fn remove_room(&mut self, namespace: &str, room: &str) -> NamespaceChange {
        let Some(rooms) = self.rooms.get_mut(namespace) else {
            return NamespaceChange::None;
        };
        let Some((room_key, members)) = rooms.remove_entry(room) else {
            return NamespaceChange::None;
        };
        let emptied = rooms.is_empty();
        self.room_event(&Arc::from(namespace), &room_key, false);
        for id in members.keys() {
            self.track(namespace, room, id, false);
            if let Some(list) = self.joined.get_mut(id) {
                list.retain(|(n, r)| !(&**n == namespace && &**r == room));
                if list.is_empty() {
                    self.joined.remove(id);
                }
            }
        }
        if emptied {
            if let Some((k, _)) = self.rooms.remove_entry(namespace) {
                return NamespaceChange::Removed(k);
            }
        }
        NamespaceChange::None
    }

    pub(crate) fn room_members(&self, namespace: &str, room: &str) -> Option<&Members> {
        self.rooms.get(namespace)?.get(room)
    }

    /// The members of a room bound to a local socket, with it.
    pub(crate) fn room_sockets<'a>(
        &'a self,
        namespace: &str,
        room: &str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<SocketShared>)> + 'a {
        self.room_members(namespace, room)
            .into_iter()
            .flatten()
            .filter_map(|(id, socket)| socket.as_ref().map(|s| (id, s)))
    }

    fn namespaces<'a>(
        &'a self,
        namespace: &'a str,
        m: Match,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a HashMap<Arc<str>, Members>)> + 'a {
        self.rooms
            .iter()
            .filter(move |(n, _)| m.matches(n, namespace))
    }

    /// Distinct ids in every room of the matching namespaces.
    pub(crate) fn namespace_members(&self, namespace: &str, m: Match) -> HashSet<Arc<str>> {
        let mut all = HashSet::new();
        for (_, rooms) in self.namespaces(namespace, m) {
            for members in rooms.values() {
                all.extend(members.keys().cloned());
            }
        }
        all
    }

    /// (namespace, room) pairs of the matching namespaces whose room id matches `room`.
    pub(crate) fn rooms_matching(
        &self,
        namespace: &str,
        ns_match: Match,
        room: &str,
        room_match: Match,
    ) -> Vec<(Arc<str>, Arc<str>, usize)> {
        let mut out = Vec::new();
        for (n, rooms) in self.namespaces(namespace, ns_match) {
            for (r, members) in rooms {
                if room_match.matches(r, room) {
                    out.push((Arc::clone(n), Arc::clone(r), members.len()));
                }
            }
        }
        out
    }

    pub(crate) fn rooms_of(&self, id: &str) -> &[RoomKey] {
        self.joined.get(id).map_or(&[], |v| v.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HeaderBlock;
    use crate::socket::Identity;

    /// A registry entry over a real loopback connection (the registry never touches it).
    async fn socket(conn_id: u64) -> Arc<SocketShared> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        drop(client);
        let identity = Identity {
            params: Default::default(),
            remote: None,
            client_ip: None,
            headers: HeaderBlock::default(),
            extensions: http::Extensions::new(),
            protocol: None,
            deflate: None,
        };
        Arc::new(SocketShared::new(
            conn_id,
            crate::socket::Transport::Tcp(accepted.unwrap().0),
            identity,
            std::sync::Weak::<crate::node::ServerInner>::new(),
            1 << 20,
            crate::SlowClientPolicy::Disconnect,
        ))
    }

    fn sorted(ids: HashSet<Arc<str>>) -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn binding_and_takeover() {
        let mut reg = Registry::default();
        let (one, two) = (socket(1).await, socket(2).await);
        reg.insert_conn(Arc::clone(&one));
        reg.insert_conn(Arc::clone(&two));
        assert!(reg.bind(Arc::from("alice"), &one).is_none());
        assert_eq!(reg.get("alice").map(|s| s.conn_id), Some(1));
        assert_eq!(one.bound_id().as_deref(), Some("alice"));
        // Binding the same socket again changes nothing.
        assert!(reg.bind(Arc::from("alice"), &one).is_none());
        // A newer connection takes the id over: the old one is returned and unbound.
        let old = reg.bind(Arc::from("alice"), &two).expect("taken over");
        assert_eq!(old.conn_id, 1);
        assert_eq!(one.bound_id(), None);
        assert_eq!(reg.get("alice").map(|s| s.conn_id), Some(2));
        // Rebinding a socket to a new id frees the old one.
        assert!(reg.bind(Arc::from("bob"), &two).is_none());
        assert!(reg.get("alice").is_none());
        assert_eq!(reg.ids.len(), 1);
        // unbind only when the binding still points at that connection.
        assert!(reg.unbind("bob", Some(1)).is_none());
        assert_eq!(reg.unbind("bob", Some(2)).map(|s| s.conn_id), Some(2));
        assert_eq!(two.bound_id(), None);
        assert!(reg.unbind("bob", None).is_none());
    }

    #[test]
    fn room_events_for_rooms_with_channels_of_their_own() {
        let preset: HashSet<String> = ["lobby".to_string()].into();
        let mut reg = Registry::default().with_room_channels(preset);
        let event = |ns: &str, room: &str, added| RoomEvent {
            namespace: Arc::from(ns),
            room: Arc::from(room),
            added,
        };
        reg.join("chat", "a", "alice");
        reg.join("chat", "a", "bob");
        reg.join("lobby", "a", "alice");
        assert_eq!(reg.take_room_events(), vec![event("chat", "a", true)]);
        reg.leave("chat", "a", "alice");
        assert!(reg.take_room_events().is_empty());
        reg.join("chat", "b", "bob");
        reg.leave_all("bob");
        assert_eq!(
            reg.take_room_events(),
            vec![
                event("chat", "b", true),
                event("chat", "a", false),
                event("chat", "b", false)
            ]
        );
        reg.join("chat", "c", "carol");
        reg.remove_room("chat", "c");
        reg.remove_room("lobby", "a");
        assert_eq!(
            reg.take_room_events(),
            vec![event("chat", "c", true), event("chat", "c", false)]
        );
        // Without room channels, nothing is reported.
        let mut plain = Registry::default();
        plain.join("chat", "a", "alice");
        assert!(plain.take_room_events().is_empty());
    }

    #[tokio::test]
    async fn rooms_and_namespace_changes() {
        let mut reg = Registry::default();
        assert_eq!(
            reg.join("chat", "a", "alice"),
            NamespaceChange::Added(Arc::from("chat"))
        );
        assert_eq!(reg.join("chat", "a", "alice"), NamespaceChange::None);
        assert_eq!(reg.join("chat", "b", "alice"), NamespaceChange::None);
        assert_eq!(reg.join("chat", "a", "bob"), NamespaceChange::None);
        assert_eq!(reg.room_members("chat", "a").map(|m| m.len()), Some(2));
        assert_eq!(reg.rooms_of("alice").len(), 2);
        assert_eq!(reg.leave("chat", "a", "alice"), NamespaceChange::None);
        assert_eq!(reg.rooms_of("alice").len(), 1);
        assert_eq!(reg.leave("chat", "a", "nobody"), NamespaceChange::None);
        assert_eq!(reg.leave("chat", "a", "bob"), NamespaceChange::None);
        assert!(
            reg.room_members("chat", "a").is_none(),
            "empty room removed"
        );
        assert_eq!(
            reg.leave("chat", "b", "alice"),
            NamespaceChange::Removed(Arc::from("chat"))
        );
        assert!(reg.rooms_of("alice").is_empty());
        assert!(reg.joined.is_empty() && reg.rooms.is_empty());
    }

    #[tokio::test]
    async fn prefix_queries() {
        let mut reg = Registry::default();
        reg.join("game:hot", "r1", "a");
        reg.join("game:hot", "r2", "b");
        reg.join("game:cold", "r1", "a");
        reg.join("chat", "r1", "c");
        assert_eq!(
            sorted(reg.namespace_members("game:", Match::Prefix)),
            ["a", "b"]
        );
        assert!(reg.namespace_members("game:", Match::Exact).is_empty());
        assert_eq!(
            sorted(reg.namespace_members("game:hot", Match::Exact)),
            ["a", "b"]
        );
        let mut rooms: Vec<(String, String, usize)> = reg
            .rooms_matching("game", Match::Prefix, "r1", Match::Exact)
            .into_iter()
            .map(|(n, r, c)| (n.to_string(), r.to_string(), c))
            .collect();
        rooms.sort();
        assert_eq!(
            rooms,
            [
                ("game:cold".to_string(), "r1".to_string(), 1),
                ("game:hot".to_string(), "r1".to_string(), 1)
            ]
        );
        assert_eq!(
            reg.rooms_matching("", Match::Prefix, "r", Match::Prefix)
                .len(),
            4
        );
    }

    #[tokio::test]
    async fn removing_a_connection_cleans_its_binding_and_rooms() {
        let mut reg = Registry::default();
        let (one, two) = (socket(1).await, socket(2).await);
        reg.insert_conn(Arc::clone(&one));
        reg.bind(Arc::from("alice"), &one);
        reg.join("chat", "a", "alice");
        reg.join("game", "a", "alice");
        let (mut changes, unbound) = reg.remove_conn(&one);
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(unbound.as_deref(), Some("alice"));
        assert_eq!(
            changes,
            [
                NamespaceChange::Removed(Arc::from("chat")),
                NamespaceChange::Removed(Arc::from("game"))
            ]
        );
        assert!(reg.conns.is_empty() && reg.ids.is_empty() && reg.rooms.is_empty());

        // A connection whose id was taken over leaves the rooms to the new one.
        let three = socket(3).await;
        reg.insert_conn(Arc::clone(&two));
        reg.insert_conn(Arc::clone(&three));
        reg.bind(Arc::from("bob"), &two);
        reg.join("chat", "a", "bob");
        reg.bind(Arc::from("bob"), &three);
        let (changes, unbound) = reg.remove_conn(&two);
        assert!(changes.is_empty() && unbound.is_none());
        assert_eq!(reg.get("bob").map(|s| s.conn_id), Some(3));
        assert!(reg
            .room_members("chat", "a")
            .is_some_and(|m| m.contains_key("bob")));
    }

    #[tokio::test]
    async fn removing_a_room_updates_every_member() {
        let mut reg = Registry::default();
        reg.join("chat", "a", "alice");
        reg.join("chat", "a", "bob");
        reg.join("chat", "b", "bob");
        assert_eq!(reg.remove_room("chat", "a"), NamespaceChange::None);
        assert!(reg.rooms_of("alice").is_empty());
        assert_eq!(reg.rooms_of("bob").len(), 1);
        assert_eq!(
            reg.remove_room("chat", "b"),
            NamespaceChange::Removed(Arc::from("chat"))
        );
        assert_eq!(reg.remove_room("chat", "b"), NamespaceChange::None);
        assert!(reg.joined.is_empty());
    }

    /// The conn ids a room delivery reaches.
    fn reached(reg: &Registry, room: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = reg
            .room_sockets("chat", room)
            .map(|(_, s)| s.conn_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[tokio::test]
    async fn room_members_follow_the_socket_their_id_is_bound_to() {
        let mut reg = Registry::default();
        let (one, two) = (socket(1).await, socket(2).await);
        reg.insert_conn(Arc::clone(&one));
        reg.insert_conn(Arc::clone(&two));
        // Joined before being bound: a member with no socket yet.
        reg.join("chat", "a", "ann");
        assert!(reached(&reg, "a").is_empty());
        reg.bind(Arc::from("ann"), &one);
        assert_eq!(reached(&reg, "a"), [1]);
        // Taken over: the membership moves to the new socket.
        reg.bind(Arc::from("ann"), &two);
        assert_eq!(reached(&reg, "a"), [2]);
        // Unbound: still a member, reaching no socket.
        reg.unbind("ann", None);
        assert!(reached(&reg, "a").is_empty());
        assert!(reg
            .room_members("chat", "a")
            .is_some_and(|m| m.contains_key("ann")));
        // A socket rebinding to another id leaves the old id's rooms without it.
        reg.bind(Arc::from("ann"), &one);
        reg.join("chat", "b", "bob");
        reg.bind(Arc::from("bob"), &one);
        assert!(reached(&reg, "a").is_empty());
        assert_eq!(reached(&reg, "b"), [1]);
    }
}

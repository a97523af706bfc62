//! This node's sockets, id bindings and rooms.
//!
//! Rooms hold ids, not sockets, as in the seed: `join_room(namespace, room, id)`. The
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

type Members = HashSet<Arc<str>>;
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
    pub(crate) fn insert_conn(&mut self, socket: Arc<SocketShared>) {
        self.conns.insert(socket.conn_id, socket);
    }

    /// Binds `id` to `socket`; returns the socket previously bound to it, if another one.
    pub(crate) fn bind(
        &mut self,
        id: Arc<str>,
        socket: &Arc<SocketShared>,
    ) -> Option<Arc<SocketShared>> {
        let previous_id = {
            let mut slot = crate::socket::lock(&socket.id);
            slot.replace(Arc::clone(&id))
        };
        if let Some(prev) = previous_id {
            if prev != id {
                if let Some(s) = self.ids.get(&prev) {
                    if Arc::ptr_eq(s, socket) {
                        self.ids.remove(&prev);
                    }
                }
            }
        }
        match self.ids.insert(id, Arc::clone(socket)) {
            Some(old) if !Arc::ptr_eq(&old, socket) => {
                *crate::socket::lock(&old.id) = None;
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
        *crate::socket::lock(&s.id) = None;
        Some(s)
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
        let id: Arc<str> = self
            .ids
            .get_key_value(id)
            .map(|(k, _)| Arc::clone(k))
            .unwrap_or_else(|| Arc::from(id));
        let (ns_key, new_ns) = match self.rooms.get_key_value(namespace) {
            Some((k, _)) => (Arc::clone(k), false),
            None => (Arc::from(namespace), true),
        };
        let rooms = self.rooms.entry(Arc::clone(&ns_key)).or_default();
        let room_key = match rooms.get_key_value(room) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(room),
        };
        let inserted = rooms
            .entry(Arc::clone(&room_key))
            .or_default()
            .insert(Arc::clone(&id));
        if inserted {
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
        if let Some(members) = rooms.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
        if rooms.is_empty() {
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
        let Some(members) = rooms.remove(room) else {
            return NamespaceChange::None;
        };
        for id in &members {
            if let Some(list) = self.joined.get_mut(id) {
                list.retain(|(n, r)| !(&**n == namespace && &**r == room));
                if list.is_empty() {
                    self.joined.remove(id);
                }
            }
        }
        if rooms.is_empty() {
            if let Some((k, _)) = self.rooms.remove_entry(namespace) {
                return NamespaceChange::Removed(k);
            }
        }
        NamespaceChange::None
    }

    pub(crate) fn room_members(&self, namespace: &str, room: &str) -> Option<&Members> {
        self.rooms.get(namespace)?.get(room)
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
                all.extend(members.iter().cloned());
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

//! History and recovery: the rooms of a namespace configured with
//! [`ServerConfig::with_history`](crate::ServerConfig::with_history) keep their last messages,
//! every event sent to them carries its [`Position`], and a client that comes back (to any
//! node) re-joins with the last position it saw through [`Server::join_recovering`]: it gets
//! what it missed, in order, then the live messages, none twice and none skipped. With
//! [`ServerConfig::with_id_history`](crate::ServerConfig::with_id_history) the same holds for
//! what is sent to each id (stream `@<id>`), recovered when the id is bound again with
//! [`Server::bind_recovering`].
//!
//! ```
//! use std::time::Duration;
//! use crosswire::{Retention, Room, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::default()
//!     .with_history("chat", Retention::new(100, Duration::from_secs(120)));
//! let server = Server::new(config)?;
//! let lobby = Room::new("chat", "lobby");
//! server.to_room(&lobby).emit("said", "hello")?;
//! // A client bound to "ann" comes back having seen nothing: it learns where the room is.
//! let joined = server.join_recovering(&lobby, "ann", None).await?;
//! assert_eq!(joined.stream, "chat/lobby");
//! assert!(!joined.recovered);
//! assert_eq!(joined.position.map(|p| p.offset), Some(1));
//! # Ok(()) }
//! ```
//!
//! # How it works
//! - **Single node**: a [`MemoryHistory`](crosswire_core::history::MemoryHistory) in the
//!   node. An emit takes the next offset, records the frame and delivers it under one lock,
//!   so offsets and delivery order agree.
//! - **Cluster**: the broker keeps the history ([`Broker::publish_recorded`]: with Redis, a
//!   Stream per room written by the same script that publishes). Every node, the sender
//!   included, delivers a recorded message when it comes back from the broker with its
//!   position, so all nodes deliver a room's messages in offset order. If the broker refuses
//!   a recorded message (it is down), the sender still delivers it to its own sockets, live and
//!   without a position, and counts it in [`crate::Stats::history_errors`].
//! - **Recovery**: the joining id is registered as *pending* on the stream before the history
//!   is read, so every live message from then on is kept for it; the read gives what it missed;
//!   then, under the lock that live delivery takes, the missed messages and the kept live ones
//!   after them are queued, and the id joins the room. A message both read and kept is sent
//!   once (by offset). A message the read held but the broker had not yet delivered here is
//!   not sent again when it arrives: the join leaves a *floor* at its position until the
//!   stream passes it. A recovery whose future is dropped unfinished lets live messages
//!   through again.
//!
//! [`Broker::publish_recorded`]: crosswire_core::Broker::publish_recorded

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crosswire_core::{Position, Retention, StreamRead};
use crosswire_protocol::envelope::Target;
use crosswire_protocol::frame;

use crate::node::Server;
use crate::registry::{NamespaceChange, Registry};
use crate::rooms::Room;
use crate::socket::Socket;
use crate::streams::{
    id_stream, skips, stream_name, stream_of, take_pending, Floor, History, Pending, Recorded,
    FLOOR_TTL,
};
use crate::sync::lock;

/// What [`Server::join_recovering`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The stream's name as clients see it: `<namespace>/<room>` for a room, `@<id>` for the
    /// messages sent to an id.
    pub stream: String,
    /// The stream's position as of the last message queued to the client (`None` when the
    /// history could not be read: the room was joined without it).
    pub position: Option<Position>,
    /// Whether every message after the position asked for was queued: false on a first join,
    /// past the window, or after the epoch changed (the application should reload its state).
    pub recovered: bool,
    /// How many missed messages were queued.
    pub replayed: usize,
}

/// Why [`Server::join_recovering`] could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The room's namespace (or, for [`Server::bind_recovering`], ids) keeps no history
    /// ([`crate::ServerConfig::with_history`], [`crate::ServerConfig::with_id_history`]).
    #[error("{0:?} keeps no history")]
    NotRecorded(String),
}

impl Server {
    fn history(&self) -> &History {
        &self.inner.history
    }

    /// The history window of `namespace`, if its rooms keep history
    /// ([`crate::ServerConfig::with_history`]).
    pub fn history_window(&self, namespace: &str) -> Option<Retention> {
        self.history().window(namespace)
    }

    /// The history window of the messages sent to ids, if they keep history
    /// ([`crate::ServerConfig::with_id_history`]).
    pub fn id_history_window(&self) -> Option<Retention> {
        self.history().id_window()
    }

    /// The window of a send to `target`, if it is recorded.
    pub(crate) fn recorded(&self, target: &Target) -> Option<Retention> {
        if !self.history().is_on() {
            return None;
        }
        self.history().window_of(target)
    }

    /// Sends an event frame to a recorded target (a room, an id, or each of a list of ids,
    /// one stream each): on a single node, records and delivers it; in a cluster, hands it to
    /// the broker, and it is delivered (here too) when it comes back with its position.
    /// Returns how many local sockets it is for.
    pub(crate) fn send_recorded(&self, target: Target, frame: Bytes, window: Retention) -> usize {
        if let Target::Ids(ids) = &target {
            return ids
                .iter()
                .map(|id| self.send_recorded(Target::Id(id.clone()), frame.clone(), window))
                .sum();
        }
        let Some(stream) = stream_of(&target) else {
            return self.deliver_local(&target, &frame);
        };
        if let Some(cluster) = &self.inner.cluster {
            let here = self.local_recipients(&target);
            let key = self.history().key(&stream);
            cluster.publish_recorded(target, frame, key, window, here > 0);
            return here;
        }
        let Some(local) = &self.history().local else {
            return 0;
        };
        let mut local = lock(local);
        let recorded = Recorded {
            target: target.clone(),
            frame: frame.clone(),
        };
        let position = local.append(&stream, recorded, &window, Instant::now());
        self.deliver_positioned(&stream, &target, &frame, &position)
    }

    /// How many of this node's sockets a recorded delivery (room or id) is for, before the
    /// broker hands it back.
    fn local_recipients(&self, target: &Target) -> usize {
        let registry = self.read_registry();
        match target {
            Target::Room {
                namespace, room, ..
            } => registry
                .room_members(namespace, room)
                .map_or(0, |m| m.len()),
            Target::Id(id) => usize::from(registry.get(id).is_some()),
            Target::Ids(_) | Target::All { .. } => 0,
        }
    }

    /// Delivers a recorded message with its position to this node's sockets, keeping a copy
    /// for every pending recovery of its stream.
    pub(crate) fn deliver_positioned(
        &self,
        stream: &str,
        target: &Target,
        frame: &Bytes,
        position: &Position,
    ) -> usize {
        let Some(positioned) =
            frame::with_position(frame, stream, position.offset, &position.epoch)
        else {
            return self.deliver_local(target, frame);
        };
        let mut pending = lock(&self.history().pending);
        let seen = match pending.get_mut(stream) {
            None => Vec::new(),
            Some(waiting) => {
                let seen = waiting.see(target, position, &positioned);
                if waiting.is_empty() {
                    pending.remove(stream);
                }
                seen
            }
        };
        if seen.is_empty() {
            return self.deliver_local(target, &positioned);
        }
        let mut target = target.clone();
        match &mut target {
            Target::Room { except, .. } | Target::All { except } => except.extend(seen),
            Target::Id(id) if seen.contains(id) => return 0,
            Target::Ids(ids) => ids.retain(|id| !seen.contains(id)),
            Target::Id(_) => {}
        }
        self.deliver_local(&target, &positioned)
    }

    /// A recorded message from the broker, with its position.
    pub(crate) fn deliver_from_broker(&self, target: &Target, frame: &Bytes, position: &Position) {
        match stream_of(target) {
            Some(stream) => {
                self.deliver_positioned(&stream, target, frame, position);
            }
            None => {
                self.deliver_local(target, frame);
            }
        }
    }

    /// Joins `id` to `room` (a room of a namespace with history) and queues to its socket the
    /// messages it missed since `since`, the last position it saw; then live messages follow,
    /// with no gap and no duplicate. With `since` `None` (a first join) nothing is replayed
    /// and the result tells the position to come back with.
    ///
    /// When this is called, the id leaves the room if it is in it (a re-join) and its
    /// connection is noted; the returned future reads the history and joins. Should that
    /// connection close before the read completes, the id is not joined. So call it from the
    /// handler itself, before any `.await` of its own (the handler may return the future).
    ///
    /// When the history cannot be read (the broker is down) the id still joins, and the
    /// result has `recovered: false` and no position.
    pub fn join_recovering(
        &self,
        room: &Room,
        id: &str,
        since: Option<Position>,
    ) -> impl std::future::Future<Output = Result<Recovery, HistoryError>> + Send + 'static {
        let started = self.start_recovery(room, id);
        let server = self.clone();
        async move {
            let (joiner, hold, id, window) = started?;
            let room = &joiner.room;
            let stream: Arc<str> = Arc::from(stream_name(room.namespace(), room.id()));
            // A room with a channel of its own: subscribed before the read, or what is
            // published between the read and the first member's subscription would be missed.
            if let (Some(cluster), Some(_)) = (server.inner.cluster.as_ref(), &hold) {
                let confirmed = cluster.confirm_room_subscribed(room.namespace(), room.id());
                if confirmed.await.is_err() {
                    tracing::warn!(room = %room.id(), "room subscription not confirmed before its history read");
                }
            }
            let guard = server.add_pending(&stream, &id, false);
            let read = server.read_history(&stream, since.as_ref(), window).await;
            let recovery = server.finish_recovery(Some(joiner), guard, since.as_ref(), read);
            drop(hold);
            server.count_recovery(&recovery, since.is_some());
            Ok(recovery)
        }
    }

    /// What [`Server::join_recovering`] does at once: the room's window, the id's
    /// connection, a hold on the room's own channel, and the id out of the room if it is in
    /// it (so that live messages are kept for it, not sent around the replay).
    fn start_recovery(&self, room: &Room, id: &str) -> Result<Started, HistoryError> {
        let window = self
            .history()
            .window(room.namespace())
            .ok_or_else(|| HistoryError::NotRecorded(room.namespace().to_string()))?;
        let id: Arc<str> = Arc::from(id);
        let joiner = Joiner {
            room: room.clone(),
            conn: self.read_registry().get(&id).map(|s| s.conn_id),
        };
        let hold = RoomHold::take(self, room);
        if self.rooms_of(&id, Some(room.namespace())).contains(room) {
            self.leave(room, &id);
        }
        Ok((joiner, hold, id, window))
    }

    /// Binds `id` to `socket` (like [`Server::bind`]) when ids keep history
    /// ([`crate::ServerConfig::with_id_history`]), and queues to the socket the messages sent
    /// to `id` that it missed since `since`, the last position it saw of its stream
    /// (`@<id>`); live messages to `id` follow, with no gap and no duplicate.
    ///
    /// The bind happens at once, when this is called (a connection handler may call it and
    /// spawn the rest); the returned future reads the history and queues what was missed. With
    /// `since` `None` nothing is replayed and the result tells the position to come back with.
    /// Live messages to `id` wait behind the replay until the future completes; a future
    /// dropped unfinished lets them through at once. Without id history the id is bound and
    /// the future resolves to [`HistoryError::NotRecorded`].
    pub fn bind_recovering(
        &self,
        id: &str,
        socket: &Socket,
        since: Option<Position>,
    ) -> impl std::future::Future<Output = Result<Recovery, HistoryError>> + Send + 'static {
        let server = self.clone();
        let id: Arc<str> = Arc::from(id);
        let stream: Arc<str> = Arc::from(id_stream(&id));
        let window = self.history().id_window();
        let guard = window.map(|_| self.add_pending(&stream, &id, true));
        self.bind(&id, socket);
        async move {
            let (Some(window), Some(guard)) = (window, guard) else {
                return Err(HistoryError::NotRecorded("ids".to_string()));
            };
            let read = server.read_history(&stream, since.as_ref(), window).await;
            let recovery = server.finish_recovery(None, guard, since.as_ref(), read);
            server.count_recovery(&recovery, since.is_some());
            Ok(recovery)
        }
    }

    /// Registers `id` as recovering on `stream` (live messages are kept for it from now on);
    /// the guard ends it, by [`Server::finish_recovery`] or when dropped (then, with
    /// `deliver_kept`, the kept messages go to the id's socket as they are).
    fn add_pending(&self, stream: &Arc<str>, id: &Arc<str>, deliver_kept: bool) -> PendingGuard {
        let token = self.history().next_token();
        lock(&self.history().pending)
            .entry(Arc::clone(stream))
            .or_default()
            .pending
            .push(Pending {
                token,
                id: Arc::clone(id),
                kept: Vec::new(),
                overflowed: false,
            });
        PendingGuard {
            server: self.clone(),
            stream: Arc::clone(stream),
            id: Arc::clone(id),
            token,
            deliver_kept,
            done: false,
        }
    }

    /// Reads the stream after `since`: from the broker in a cluster, from memory otherwise.
    /// Entries come back as (target, frame).
    async fn read_history(
        &self,
        stream: &str,
        since: Option<&Position>,
        window: Retention,
    ) -> Option<StreamRead<(Target, Bytes)>> {
        let offset = since.map(|p| p.offset);
        let Some(cluster) = &self.inner.cluster else {
            let local = self.history().local.as_ref()?;
            let read = lock(local).read(stream, offset, &window, Instant::now());
            return Some(StreamRead {
                epoch: read.epoch,
                top: read.top,
                complete: read.complete,
                entries: read
                    .entries
                    .into_iter()
                    .map(|(o, r)| (o, (r.target, r.frame)))
                    .collect(),
            });
        };
        let key = self.history().key(stream);
        match cluster.broker.read_stream(&key, offset, window).await {
            Ok(read) => Some(cluster.decode_read(read)),
            Err(e) => {
                self.inner
                    .stats
                    .history_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream, error = %e, "history read failed; joining without recovery");
                None
            }
        }
    }

    /// Queues the missed and the kept messages and joins `room` (if given), under the
    /// pending lock.
    fn finish_recovery(
        &self,
        room: Option<Joiner>,
        mut guard: PendingGuard,
        since: Option<&Position>,
        read: Option<StreamRead<(Target, Bytes)>>,
    ) -> Recovery {
        guard.done = true;
        let (stream, id) = (&guard.stream, &guard.id);
        let mut pending = lock(&self.history().pending);
        let waiting = pending.entry(Arc::clone(stream)).or_default();
        let mine = take_pending(waiting, guard.token, id);
        let mut out = Vec::new();
        let (position, recovered) = match read {
            None => (None, false),
            Some(read) => {
                let recovered = !mine.overflowed
                    && read.complete
                    && since.is_some_and(|s| s.epoch == read.epoch);
                if recovered {
                    for (offset, (target, frame)) in &read.entries {
                        if !skips(target, id) {
                            let f = frame::with_position(frame, stream, *offset, &read.epoch);
                            out.push(f.unwrap_or_else(|| frame.clone()));
                        }
                    }
                }
                (Some(Position::new(read.top, read.epoch)), recovered)
            }
        };
        let replayed = out.len();
        let mut last = position;
        for (p, frame) in mine.kept {
            let newer = last
                .as_ref()
                .is_none_or(|l| l.epoch != p.epoch || p.offset > l.offset);
            if newer {
                out.push(frame);
                last = Some(p);
            }
        }
        if let Some(socket) = self.read_registry().get(id).cloned() {
            let batch = crate::socket::Batch::begin();
            for frame in out {
                let _ = socket.enqueue_in_batch(frame);
            }
            drop(batch);
        }
        let now = Instant::now();
        waiting
            .floors
            .retain(|f| f.id != *id && now.duration_since(f.at) < FLOOR_TTL);
        if let Some(position) = &last {
            waiting.floors.push(Floor {
                id: Arc::clone(id),
                position: position.clone(),
                at: now,
            });
        }
        if waiting.is_empty() {
            pending.remove(stream);
        }
        let changes = room.map(|joiner| {
            self.change_rooms_locked(|registry| [self.join_if_still_bound(registry, &joiner, id)])
        });
        drop(pending);
        if let Some(changes) = changes {
            self.rooms_changed(changes);
        }
        Recovery {
            stream: stream.to_string(),
            position: last,
            recovered,
            replayed,
        }
    }

    /// Joins `id` to the recovered room, unless the connection it was bound to when the
    /// recovery began has gone meanwhile (the client left while its history was read): a
    /// join then would leave the id in the room with no one to leave it. (The room's own
    /// channel, subscribed for the recovery, is dropped with its [`RoomHold`] when the room
    /// has no local members.)
    fn join_if_still_bound(
        &self,
        registry: &mut Registry,
        joiner: &Joiner,
        id: &str,
    ) -> NamespaceChange {
        let (namespace, room) = (joiner.room.namespace(), joiner.room.id());
        let now = registry.get(id).map(|s| s.conn_id);
        if joiner.conn.is_none() || now == joiner.conn {
            return registry.join(namespace, room, id);
        }
        tracing::debug!(%id, room = %joiner.room, "recovering client gone: not joined");
        NamespaceChange::None
    }

    fn count_recovery(&self, recovery: &Recovery, asked: bool) {
        let stats = &self.inner.stats;
        if asked {
            let counter = if recovery.recovered {
                &stats.recoveries
            } else {
                &stats.recoveries_missed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .replayed_messages
            .fetch_add(recovery.replayed as u64, Ordering::Relaxed);
    }
}

/// The room a recovery joins, and the connection its id was bound to when it began (`None`:
/// not bound here, joined as [`Server::join`] would).
struct Joiner {
    room: Room,
    conn: Option<u64>,
}

/// What a recovery starts with: the room to join, the hold on its channel, the id and the
/// room's history window.
type Started = (Joiner, Option<RoomHold>, Arc<str>, Retention);

/// A recovery's hold on its room's own channel ([`crate::cluster::Cluster::hold_room`]): the
/// channel stays subscribed until the recovery has joined (or not); dropped, the last hold
/// unsubscribes a room left with no local members.
struct RoomHold {
    server: Server,
    room: Room,
}

impl RoomHold {
    /// A hold on `room`'s channel, when it has one of its own; taken under the registry's
    /// lock, so that the room's last member cannot leave between the check and the hold.
    fn take(server: &Server, room: &Room) -> Option<Self> {
        let cluster = server.inner.cluster.as_ref()?;
        if !cluster.has_room_channels(room.namespace()) {
            return None;
        }
        let registry = server.read_registry();
        let subscribed = has_members(&registry, room);
        cluster.hold_room(room.namespace(), room.id(), subscribed);
        drop(registry);
        Some(Self {
            server: server.clone(),
            room: room.clone(),
        })
    }
}

impl Drop for RoomHold {
    fn drop(&mut self) {
        let Some(cluster) = self.server.inner.cluster.as_ref() else {
            return;
        };
        let registry = self.server.read_registry();
        let unsubscribe =
            !has_members(&registry, &self.room) && self.server.inner.config.auto_unsubscribe;
        cluster.release_room(self.room.namespace(), self.room.id(), unsubscribe);
        drop(registry);
    }
}

fn has_members(registry: &Registry, room: &Room) -> bool {
    registry
        .room_members(room.namespace(), room.id())
        .is_some_and(|m| !m.is_empty())
}

/// A recovery in progress; dropped unfinished (its future was dropped), it ends the recovery
/// so that live messages are no longer held back for the id.
struct PendingGuard {
    server: Server,
    stream: Arc<str>,
    id: Arc<str>,
    token: u64,
    deliver_kept: bool,
    done: bool,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let server = &self.server;
        let mut pending = lock(&server.history().pending);
        let Some(waiting) = pending.get_mut(&self.stream) else {
            return;
        };
        let mine = take_pending(waiting, self.token, &self.id);
        if waiting.is_empty() {
            pending.remove(&self.stream);
        }
        if !self.deliver_kept || mine.kept.is_empty() {
            return;
        }
        if let Some(socket) = server.read_registry().get(&self.id).cloned() {
            let _batch = crate::socket::Batch::begin();
            for (_, frame) in mine.kept {
                let _ = socket.enqueue_in_batch(frame);
            }
        }
    }
}

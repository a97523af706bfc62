//! Sending to sockets: the targets ([`Server::to`], [`Server::to_ids`], [`Server::to_room`],
//! [`Server::to_all`]) and the local half of every delivery.
//!
//! A send encodes the frame once; this node's recipients get the same [`Bytes`] by
//! reference count (those that negotiated permessage-deflate share one compressed copy), and
//! the broker gets the plain bytes for the other nodes, which compress them once each.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::compression::Outgoing;
use crate::error::EmitError;
use crate::node::Server;
use crate::rooms::Room;
use crate::socket::{Batch, SocketShared};
use crosswire_protocol::envelope::Target;
use crosswire_protocol::frame;
use crosswire_protocol::ws;

/// The kinds of target, which decide the options an [`Emit`] offers.
pub mod target {
    /// One id ([`crate::Server::to`]).
    #[derive(Debug)]
    pub struct Id;
    /// A list of ids ([`crate::Server::to_ids`]).
    #[derive(Debug)]
    pub struct Ids;
    /// A room ([`crate::Server::to_room`]): `except`, `destroy`.
    #[derive(Debug)]
    pub struct Room;
    /// Everyone ([`crate::Server::to_all`]): `except`.
    #[derive(Debug)]
    pub struct All;
}

/// A send in preparation: choose options, then [`Emit::emit`]. The options offered depend
/// on the target: `except` for rooms and everyone, `destroy` for rooms, `local` for all.
#[must_use = "nothing is sent until .emit() is called"]
pub struct Emit<'a, K> {
    server: &'a Server,
    target: Target,
    local: bool,
    kind: PhantomData<K>,
}

impl<K> std::fmt::Debug for Emit<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit")
            .field("target", &self.target)
            .field("local", &self.local)
            .finish()
    }
}

impl Server {
    /// Sends to the socket bound to `id`, wherever it is connected.
    pub fn to(&self, id: impl Into<String>) -> Emit<'_, target::Id> {
        self.emit_to(Target::Id(id.into()))
    }

    /// Sends to the sockets bound to each of `ids`. An id listed twice is sent to once.
    pub fn to_ids<I, S>(&self, ids: I) -> Emit<'_, target::Ids>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids
            .into_iter()
            .map(Into::into)
            .filter(|id| seen.insert(id.clone()))
            .collect();
        self.emit_to(Target::Ids(ids))
    }

    /// Sends to every member of `room`.
    pub fn to_room(&self, room: impl Into<Room>) -> Emit<'_, target::Room> {
        let (namespace, room) = room.into().into_parts();
        self.emit_to(Target::Room {
            namespace,
            room,
            except: Vec::new(),
            destroy: false,
        })
    }

    /// Sends to every socket.
    pub fn to_all(&self) -> Emit<'_, target::All> {
        self.emit_to(Target::All { except: Vec::new() })
    }

    fn emit_to<K>(&self, target: Target) -> Emit<'_, K> {
        Emit {
            server: self,
            target,
            local: false,
            kind: PhantomData,
        }
    }

    /// Delivers a frame to the local sockets named by `target`; returns how many got it.
    pub(crate) fn deliver_local(&self, target: &Target, frame: &Bytes) -> usize {
        let delivered = {
            let reg = self.read_registry();
            let mut delivered = 0;
            let mut outgoing = Outgoing::new(frame);
            let counters = &self.inner.stats;
            let mut send = |s: &Arc<SocketShared>| {
                let bytes = outgoing.for_socket(s.deflate.as_ref(), counters);
                if s.push_in_batch(bytes).is_ok() {
                    delivered += 1;
                }
            };
            match target {
                Target::All { except } if except.is_empty() => {
                    reg.conns.values().for_each(&mut send)
                }
                Target::All { except } => reg
                    .conns
                    .values()
                    .filter(|s| {
                        s.bound_id()
                            .is_none_or(|id| !except.iter().any(|e| *e == *id))
                    })
                    .for_each(&mut send),
                Target::Id(id) => reg.get(id).into_iter().for_each(&mut send),
                Target::Ids(ids) => ids.iter().filter_map(|id| reg.get(id)).for_each(&mut send),
                Target::Room {
                    namespace,
                    room,
                    except,
                    ..
                } => reg
                    .room_sockets(namespace, room)
                    .filter(|(id, _)| !except.iter().any(|e| **e == ***id))
                    .for_each(|(_, s)| send(s)),
            }
            delivered
        };
        // One add per emit, not per socket.
        self.inner
            .stats
            .local_deliveries
            .fetch_add(delivered as u64, std::sync::atomic::Ordering::Relaxed);
        if let Target::Room {
            namespace,
            room,
            destroy: true,
            ..
        } = target
        {
            self.remove_room_local(namespace, room);
        }
        delivered
    }
}

impl<K> Emit<'_, K> {
    /// Delivers to this node's sockets only.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Sends event `event` with a serialisable payload. The frame is encoded once and shared
    /// by every recipient, local or remote. Returns how many local sockets got it.
    ///
    /// To a room that keeps history ([`crate::ServerConfig::with_history`]) the event is
    /// recorded and carries its position; in a cluster it is then delivered, here too, once
    /// the broker has given it its place, and the count returned is the room's local members.
    pub fn emit<T: Serialize + ?Sized>(self, event: &str, payload: &T) -> Result<usize, EmitError> {
        let frame = frame::encode_event(event, payload)?;
        self.send_event(frame)
    }

    /// Sends event `event` with a payload that is already JSON text (never re-parsed).
    /// Recorded like [`Emit::emit`].
    pub fn emit_raw(self, event: &str, payload: &RawValue) -> Result<usize, EmitError> {
        self.send_event(frame::encode_event_raw(event, payload))
    }

    /// An event frame: recorded when it goes to a room that keeps history (and not only to
    /// this node), sent as it is otherwise.
    fn send_event(self, frame: Bytes) -> Result<usize, EmitError> {
        if self.local {
            return self.send_frame(frame);
        }
        let Some(window) = self.server.recorded(&self.target) else {
            return self.send_frame(frame);
        };
        if self.server.is_shutting_down() {
            return Err(EmitError::ShutDown);
        }
        let batch = Batch::begin();
        let delivered = self.server.send_recorded(self.target, frame, window);
        drop(batch);
        Ok(delivered)
    }

    /// Sends a text message as it is, outside the event protocol (encoded once). Never
    /// recorded, even to a room that keeps history.
    pub fn send_text(self, text: &str) -> Result<usize, EmitError> {
        self.send_frame(ws::server_frame(ws::OpCode::Text, text.as_bytes()))
    }

    /// Sends a binary message (encoded once, shared by every recipient).
    pub fn send_binary(self, data: impl AsRef<[u8]>) -> Result<usize, EmitError> {
        self.send_frame(ws::server_frame(ws::OpCode::Binary, data.as_ref()))
    }

    /// Sends a complete, pre-encoded WebSocket frame.
    pub fn send_frame(self, frame: Bytes) -> Result<usize, EmitError> {
        if self.server.is_shutting_down() {
            return Err(EmitError::ShutDown);
        }
        let batch = Batch::begin();
        let delivered = self.server.deliver_local(&self.target, &frame);
        if !self.local {
            if let Some(cluster) = &self.server.inner.cluster {
                let fully_local = matches!(self.target, Target::Id(_)) && delivered == 1;
                if !fully_local {
                    cluster.publish_delivery(self.target, frame);
                }
            }
        }
        drop(batch);
        Ok(delivered)
    }
}

impl<'a> Emit<'a, target::Room> {
    /// Skips the sockets bound to these ids (on every node).
    pub fn except<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Target::Room { except, .. } = &mut self.target {
            except.extend(ids.into_iter().map(Into::into));
        }
        self
    }

    /// Removes the room (on every node it reaches) after delivering.
    pub fn destroy(mut self) -> Self {
        if let Target::Room { destroy, .. } = &mut self.target {
            *destroy = true;
        }
        self
    }
}

impl<'a> Emit<'a, target::All> {
    /// Skips the sockets bound to these ids (on every node): "everyone but the sender".
    pub fn except<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Target::All { except } = &mut self.target {
            except.extend(ids.into_iter().map(Into::into));
        }
        self
    }
}

//! The state behind recorded streams (see [`crate::history`]): the history windows per
//! namespace and for ids, the in-memory history of a node without a broker, and the
//! recoveries in progress per stream, with what live delivery must do for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use crosswire_core::history::MemoryHistory;
use crosswire_core::{Position, Retention};
use crosswire_protocol::envelope::Target;

/// Live messages kept for one pending recovery at most; past it the recovery reports
/// `recovered: false` (the client reloads) rather than hold unbounded memory.
const PENDING_LIMIT: usize = 10_000;

/// What a single node records per message.
#[derive(Clone)]
pub(crate) struct Recorded {
    pub(crate) target: Target,
    pub(crate) frame: Bytes,
}

/// An id waiting for its history read, and the live messages kept for it meanwhile.
pub(crate) struct Pending {
    /// Tells this recovery from another of the same id on the same stream.
    pub(crate) token: u64,
    pub(crate) id: Arc<str>,
    pub(crate) kept: Vec<(Position, Bytes)>,
    pub(crate) overflowed: bool,
}

/// An id that joined at `position` after reading the history: a message the read already
/// held may still be on its way from the broker, and is not sent to it again when it comes.
/// Dropped at the first later message (the broker delivers a stream in order), or after
/// [`FLOOR_TTL`].
pub(crate) struct Floor {
    pub(crate) id: Arc<str>,
    pub(crate) position: Position,
    pub(crate) at: Instant,
}

/// How long a [`Floor`] waits for the stream to pass it: far longer than a message takes
/// from the broker.
pub(crate) const FLOOR_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The recoveries of one stream in progress, and the joins it may still owe a skip.
#[derive(Default)]
pub(crate) struct Waiting {
    pub(crate) pending: Vec<Pending>,
    pub(crate) floors: Vec<Floor>,
}

impl Waiting {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.floors.is_empty()
    }

    /// Keeps a copy of a live message for each pending recovery it is for, and returns the
    /// ids it must not be sent to now: those still recovering (they get the copy), and those
    /// that had it in their history read already.
    pub(crate) fn see(
        &mut self,
        target: &Target,
        position: &Position,
        frame: &Bytes,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        for p in self.pending.iter_mut().filter(|p| reaches(target, &p.id)) {
            if p.kept.len() < PENDING_LIMIT {
                p.kept.push((position.clone(), frame.clone()));
            } else {
                p.overflowed = true;
            }
            seen.push(p.id.to_string());
        }
        self.floors.retain(|f| {
            let behind = f.position.epoch == position.epoch && position.offset <= f.position.offset;
            if behind {
                seen.push(f.id.to_string());
            }
            behind
        });
        seen
    }
}

/// The node's history part.
pub(crate) struct History {
    windows: HashMap<String, Retention>,
    /// The window of the messages sent to ids, when they keep history.
    ids: Option<Retention>,
    /// The history itself, on a node without a broker.
    pub(crate) local: Option<Mutex<MemoryHistory<Recorded>>>,
    /// Recoveries in progress by stream. Live delivery of a recorded message happens under
    /// this lock (see the module docs).
    pub(crate) pending: Mutex<HashMap<Arc<str>, Waiting>>,
    /// Broker key of stream `s`: `<prefix>{s}`.
    key_prefix: String,
    /// The last recovery token handed out.
    tokens: std::sync::atomic::AtomicU64,
}

impl History {
    pub(crate) fn new(
        windows: HashMap<String, Retention>,
        ids: Option<Retention>,
        clustered: bool,
        ws_prefix: &str,
    ) -> Self {
        let on = !windows.is_empty() || ids.is_some();
        let local = (!clustered && on).then(|| Mutex::new(MemoryHistory::new()));
        Self {
            windows,
            ids,
            local,
            pending: Mutex::new(HashMap::new()),
            key_prefix: format!("{ws_prefix}:history:"),
            tokens: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A token for a new pending recovery.
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The window of a namespace that keeps history.
    pub(crate) fn window(&self, namespace: &str) -> Option<Retention> {
        self.windows.get(namespace).copied()
    }

    /// The window of the messages sent to ids, if they keep history.
    pub(crate) fn id_window(&self) -> Option<Retention> {
        self.ids
    }

    /// Whether anything keeps history.
    pub(crate) fn is_on(&self) -> bool {
        !self.windows.is_empty() || self.ids.is_some()
    }

    /// The window of a send to `target`, if it is recorded: a room of a namespace with
    /// history, or ids when they keep history (never everyone).
    pub(crate) fn window_of(&self, target: &Target) -> Option<Retention> {
        match target {
            Target::Room { namespace, .. } => self.window(namespace),
            Target::Id(_) | Target::Ids(_) => self.ids,
            Target::All { .. } => None,
        }
    }

    /// The broker key of a stream (a hash tag keeps its keys in one Redis Cluster slot).
    pub(crate) fn key(&self, stream: &str) -> String {
        format!("{}{{{stream}}}", self.key_prefix)
    }
}

/// The stream name of a room.
pub(crate) fn stream_name(namespace: &str, room: &str) -> String {
    format!("{namespace}/{room}")
}

/// The stream name of the messages sent to an id.
pub(crate) fn id_stream(id: &str) -> String {
    format!("@{id}")
}

/// The stream a recorded delivery to `target` belongs to (rooms and single ids).
pub(crate) fn stream_of(target: &Target) -> Option<String> {
    match target {
        Target::Room {
            namespace, room, ..
        } => Some(stream_name(namespace, room)),
        Target::Id(id) => Some(id_stream(id)),
        _ => None,
    }
}

/// Whether a delivery to `target` skips `id`.
pub(crate) fn skips(target: &Target, id: &str) -> bool {
    match target {
        Target::Room { except, .. } | Target::All { except } => except.iter().any(|e| e == id),
        _ => false,
    }
}

/// Whether a recorded delivery to `target` is for `id` (a room's member, or the id itself).
fn reaches(target: &Target, id: &str) -> bool {
    match target {
        Target::Id(to) => to == id,
        Target::Ids(to) => to.iter().any(|t| t == id),
        other => !skips(other, id),
    }
}

/// Removes the pending recovery `token` (of `id`) and gives it back.
pub(crate) fn take_pending(waiting: &mut Waiting, token: u64, id: &Arc<str>) -> Pending {
    match waiting.pending.iter().position(|p| p.token == token) {
        Some(i) => waiting.pending.swap_remove(i),
        None => Pending {
            token,
            id: Arc::clone(id),
            kept: Vec::new(),
            overflowed: false,
        },
    }
}

//! The positions and join outcomes of rooms with history (docs/PROTOCOL.md, "History and
//! recovery"), as handlers and events see them.

use serde::{Deserialize, Serialize};

/// A place in a stream: the `offset` of a message and the `epoch` of the stream's history.
///
/// Offsets count 1, 2, 3, … within one epoch; a new epoch means the history was lost and
/// offsets started again. Serialises as `{"offset": n, "epoch": "e"}`, the shape of `since`
/// in a `join`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The message's place in the stream.
    pub offset: u64,
    /// Opaque name of the stream's history.
    pub epoch: String,
}

impl Position {
    /// A position from its parts.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        Self {
            offset,
            epoch: epoch.into(),
        }
    }

    /// Whether `offset` in `epoch` replaces this position: another epoch, or a greater offset
    /// in the same one (never back within one epoch).
    ///
    /// ```
    /// use crosswire_client::Position;
    ///
    /// let seen = Position::new(7, "e1");
    /// assert!(seen.is_replaced_by(8, "e1"));
    /// assert!(!seen.is_replaced_by(7, "e1"));
    /// assert!(!seen.is_replaced_by(3, "e1"));
    /// assert!(seen.is_replaced_by(3, "e2"));
    /// ```
    pub fn is_replaced_by(&self, offset: u64, epoch: &str) -> bool {
        self.epoch != epoch || offset > self.offset
    }
}

/// What a successful [`Client::join`](crate::Client::join) learnt from the server's reply.
///
/// From a server without history for the room's namespace (reply `{"ok": true}`): not
/// recovered, no stream, no position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Whether every message since the position sent as `since` was replayed before the
    /// reply. `false` on a first join, after too long away or a new epoch: reload the room's
    /// state.
    pub recovered: bool,
    /// The room's stream (`<namespace>/<room>`), when the server keeps its history.
    pub stream: Option<String>,
    /// The stream's position as of the last message sent to this client before the reply.
    pub position: Option<Position>,
}

/// Data of the `rejoin` event: the outcome of re-sending `join` for a room after a reconnect.
/// Payload: `{"room", "recovered", "stream", "offset", "epoch"}` (the last three `null` from a
/// server without history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinInfo {
    /// The room joined again.
    pub room: String,
    /// Whether the messages missed while away were replayed (just before this event); if
    /// not, reload the room's state.
    pub recovered: bool,
    /// The room's stream, when the server keeps its history.
    #[serde(default)]
    pub stream: Option<String>,
    /// The stream's offset after the rejoin.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The stream's epoch after the rejoin.
    #[serde(default)]
    pub epoch: Option<String>,
}

impl RejoinInfo {
    pub(crate) fn new(room: String, joined: Joined) -> Self {
        let (offset, epoch) = match joined.position {
            Some(p) => (Some(p.offset), Some(p.epoch)),
            None => (None, None),
        };
        Self {
            room,
            recovered: joined.recovered,
            stream: joined.stream,
            offset,
            epoch,
        }
    }

    /// `offset` and `epoch` as a [`Position`], when the reply carried both.
    pub fn position(&self) -> Option<Position> {
        Some(Position::new(self.offset?, self.epoch.clone()?))
    }
}

/// Data of the `rejoin-error` event: re-sending `join` for a room after a reconnect failed
/// (refused, a reply of the wrong shape, or no reply in time). Payload: `{"room", "error"}`.
///
/// The room stays joined on the client's side, so the next reconnect tries again;
/// [`Client::leave`](crate::Client::leave) forgets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinErrorInfo {
    /// The room whose rejoin failed.
    pub room: String,
    /// What went wrong, for a person.
    pub error: String,
}

//! Rooms joined with message recovery: the last position seen per stream, the rooms joined,
//! the `join` reply and the `rejoin` reports (docs/PROTOCOL.md, "History and recovery").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, RequestError, RoomError};
use crate::event::Payload;
use crate::position::{Joined, Position};

/// The `join` payload.
#[derive(Serialize)]
pub(crate) struct JoinRequest<'a> {
    pub(crate) room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) since: Option<&'a Position>,
}

/// The `leave` payload.
#[derive(Serialize)]
pub(crate) struct LeaveRequest<'a> {
    pub(crate) room: &'a str,
}

/// A `join` or `leave` reply: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    recovered: bool,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
}

fn parse_reply(event: &str, payload: &Payload) -> Result<Reply, RoomError> {
    let reply: Reply = payload.parse().map_err(|e| {
        RequestError::new(
            ErrorCode::InvalidReply,
            format!("`{event}` reply is not {{\"ok\": bool, ...}}: {e}"),
        )
    })?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(RoomError::Refused(
            reply.error.unwrap_or_else(|| "refused".to_string()),
        ))
    }
}

/// Reads a `join` reply.
pub(crate) fn parse_join_reply(event: &str, payload: &Payload) -> Result<Joined, RoomError> {
    let reply = parse_reply(event, payload)?;
    let position = match (reply.offset, reply.epoch) {
        (Some(offset), Some(epoch)) => Some(Position { offset, epoch }),
        _ => None,
    };
    Ok(Joined {
        recovered: reply.recovered,
        stream: reply.stream,
        position,
    })
}

/// Reads a `leave` reply.
pub(crate) fn parse_leave_reply(event: &str, payload: &Payload) -> Result<(), RoomError> {
    parse_reply(event, payload).map(|_| ())
}

/// The rooms joined and the last position seen per stream. Guarded by a std mutex in
/// `Shared`, held only for these map operations.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    /// Room → its stream (`None` from a server without history).
    joined: HashMap<String, Option<String>>,
    /// Stream → the last position seen in an event or a join reply.
    positions: HashMap<String, Position>,
    /// The stream of the messages sent to this client's id (`@<id>`), once one was seen.
    id_stream: Option<String>,
}

impl Rooms {
    /// Records a position seen for `stream`, following the replace rule. Allocates only for
    /// a new stream or a new epoch.
    pub(crate) fn observe(&mut self, stream: &str, offset: u64, epoch: &str) {
        if stream.starts_with('@') && self.id_stream.as_deref() != Some(stream) {
            self.id_stream = Some(stream.to_string());
        }
        match self.positions.get_mut(stream) {
            Some(seen) if seen.epoch == epoch => seen.offset = seen.offset.max(offset),
            Some(seen) => *seen = Position::new(offset, epoch),
            None => {
                self.positions
                    .insert(stream.to_string(), Position::new(offset, epoch));
            }
        }
    }

    /// Records a successful join of `room`.
    pub(crate) fn joined(&mut self, room: &str, joined: &Joined) {
        if let (Some(stream), Some(position)) = (&joined.stream, &joined.position) {
            self.observe(stream, position.offset, &position.epoch);
        }
        self.joined.insert(room.to_string(), joined.stream.clone());
    }

    /// Records a successful rejoin, unless the room was left meanwhile. Returns whether it
    /// is still joined.
    pub(crate) fn rejoined(&mut self, room: &str, joined: &Joined) -> bool {
        if !self.is_joined(room) {
            return false;
        }
        self.joined(room, joined);
        true
    }

    pub(crate) fn is_joined(&self, room: &str) -> bool {
        self.joined.contains_key(room)
    }

    /// Forgets `room`, and its stream's position unless another joined room shares it.
    pub(crate) fn leave(&mut self, room: &str) {
        if let Some(Some(stream)) = self.joined.remove(room) {
            if !self
                .joined
                .values()
                .any(|other| other.as_deref() == Some(stream.as_str()))
            {
                self.positions.remove(&stream);
            }
        }
    }

    /// The last position seen of this client's id stream, which a reconnect gives the server
    /// in its query so that what was sent to the id meanwhile is sent.
    pub(crate) fn id_position(&self) -> Option<&Position> {
        self.positions.get(self.id_stream.as_deref()?)
    }

    /// The last position seen of `room`'s stream.
    pub(crate) fn position(&self, room: &str) -> Option<Position> {
        let stream = self.joined.get(room)?.as_deref()?;
        self.positions.get(stream).cloned()
    }

    /// The rooms joined, sorted.
    pub(crate) fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.joined.keys().cloned().collect();
        rooms.sort_unstable();
        rooms
    }

    /// Every joined room with the position to send as `since`, sorted by room.
    pub(crate) fn rejoins(&self) -> Vec<(String, Option<Position>)> {
        let mut rejoins: Vec<(String, Option<Position>)> = self
            .joined
            .keys()
            .map(|room| (room.clone(), self.position(room)))
            .collect();
        rejoins.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rejoins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::RejoinInfo;

    fn joined(stream: Option<&str>, position: Option<(u64, &str)>) -> Joined {
        Joined {
            recovered: false,
            stream: stream.map(str::to_string),
            position: position.map(|(o, e)| Position::new(o, e)),
        }
    }

    #[test]
    fn positions_move_forward_within_an_epoch_and_reset_with_another() {
        let mut rooms = Rooms::default();
        rooms.joined("lobby", &joined(Some("relay/lobby"), Some((7, "e1"))));
        assert_eq!(rooms.position("lobby"), Some(Position::new(7, "e1")));
        rooms.observe("relay/lobby", 9, "e1");
        assert_eq!(rooms.position("lobby"), Some(Position::new(9, "e1")));
        rooms.observe("relay/lobby", 8, "e1");
        assert_eq!(rooms.position("lobby"), Some(Position::new(9, "e1")));
        rooms.observe("relay/lobby", 2, "e2");
        assert_eq!(rooms.position("lobby"), Some(Position::new(2, "e2")));
        // A join reply follows the same rule.
        rooms.joined("lobby", &joined(Some("relay/lobby"), Some((1, "e2"))));
        assert_eq!(rooms.position("lobby"), Some(Position::new(2, "e2")));
        assert_eq!(
            rooms.rejoins(),
            [("lobby".to_string(), Some(Position::new(2, "e2")))]
        );
    }

    #[test]
    fn leave_forgets_room_and_position_and_rejoins_skip_left_rooms() {
        let mut rooms = Rooms::default();
        rooms.joined("b", &joined(Some("relay/b"), Some((1, "e"))));
        rooms.joined("a", &joined(None, None));
        assert_eq!(rooms.rooms(), ["a", "b"]);
        assert_eq!(rooms.position("a"), None);
        assert_eq!(
            rooms.rejoins(),
            [
                ("a".to_string(), None),
                ("b".to_string(), Some(Position::new(1, "e")))
            ]
        );
        rooms.leave("b");
        assert_eq!(rooms.rooms(), ["a"]);
        assert!(rooms.positions.is_empty());
        assert!(!rooms.rejoined("b", &joined(Some("relay/b"), Some((5, "e")))));
        assert_eq!(rooms.rooms(), ["a"]);
        assert!(rooms.rejoined("a", &joined(None, None)));
    }

    #[test]
    fn the_id_stream_is_the_one_named_with_an_at() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.id_position(), None);
        rooms.observe("relay/a", 4, "e");
        assert_eq!(rooms.id_position(), None);
        rooms.observe("@me", 2, "e");
        rooms.observe("@me", 3, "e");
        assert_eq!(rooms.id_position(), Some(&Position::new(3, "e")));
    }

    #[test]
    fn replies() {
        let p = |json: &str| Payload::from_json(json).unwrap();
        assert_eq!(
            parse_join_reply(
                "join",
                &p(r#"{"ok":true,"stream":"relay/l","offset":7,"epoch":"x","recovered":true}"#)
            )
            .unwrap(),
            Joined {
                recovered: true,
                stream: Some("relay/l".into()),
                position: Some(Position::new(7, "x")),
            }
        );
        assert_eq!(
            parse_join_reply("join", &p(r#"{"ok":true}"#)).unwrap(),
            joined(None, None)
        );
        assert_eq!(
            parse_join_reply("join", &p(r#"{"ok":false,"error":"no"}"#)),
            Err(RoomError::Refused("no".into()))
        );
        assert_eq!(
            parse_leave_reply("leave", &p(r#"{"ok":false}"#)),
            Err(RoomError::Refused("refused".into()))
        );
        for wrong in ["null", r#"{"event":"join"}"#, r#"{"ok":true,"offset":-1}"#] {
            match parse_join_reply("join", &p(wrong)) {
                Err(RoomError::Request(e)) => assert_eq!(e.code, ErrorCode::InvalidReply),
                other => panic!("{wrong}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejoin_info_shape() {
        let info = RejoinInfo::new("l".into(), joined(Some("relay/l"), Some((3, "e"))));
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({"room": "l", "recovered": false, "stream": "relay/l", "offset": 3, "epoch": "e"})
        );
        assert_eq!(info.position(), Some(Position::new(3, "e")));
        let bare: RejoinInfo = serde_json::from_str(r#"{"room":"l","recovered":false}"#).unwrap();
        assert_eq!(bare.position(), None);
        let since = JoinRequest {
            room: "l",
            since: Some(&Position::new(3, "e")),
        };
        assert_eq!(
            serde_json::to_string(&since).unwrap(),
            r#"{"room":"l","since":{"offset":3,"epoch":"e"}}"#
        );
        let first = JoinRequest {
            room: "l",
            since: None,
        };
        assert_eq!(serde_json::to_string(&first).unwrap(), r#"{"room":"l"}"#);
    }
}

//! The JSON frames of the client protocol.
//!
//! Client → server: `{"event": "<name>", "payload": <any>, "callbackId": "<1..64 chars>"?}`,
//! and, from crosswire clients only, the answer to a server request:
//! `{"ackId": "<id>", "payload": <any>}`.
//!
//! Server → client: an event `{"event": "<name>", "payload": <any>}`, a reply
//! `{"callbackId": "<id>", "payload": <any>}`, or a request (an event with an extra
//! `"ackId"` that old clients ignore). An event to a room with history also carries its
//! place in the room's stream, `"stream"`, `"offset"` and `"epoch"` ([`StreamPosition`]).
//!
//! Incoming frames are parsed with borrowed fields and the payload kept as raw JSON text, so
//! nothing is copied or re-serialised; outgoing frames are written straight into a complete
//! WebSocket frame ([`crate::ws::build_frame`]) that every recipient shares.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ws::{build_frame, OpCode};

/// Longest `callbackId` (and `ackId`) accepted, in characters.
pub const MAX_CALLBACK_ID_LEN: usize = 64;

/// Why a client frame was rejected. The frame is dropped; the connection stays open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not JSON, or JSON of the wrong shape (e.g. `event` not a string, the frame itself nested
    /// past serde_json's depth limit; a deep *payload* stays raw and is accepted).
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither an `event` nor an `ackId`.
    #[error("frame has no event")]
    NoEvent,
    /// `callbackId` (or `ackId`) empty or longer than 64 characters.
    #[error("callbackId must be 1..=64 characters, got {0}")]
    BadCallbackId(usize),
}

/// Every frame's fields, both ways.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "callbackId", borrow, default)]
    callback_id: Option<Cow<'a, str>>,
    #[serde(rename = "ackId", borrow, default)]
    ack_id: Option<Cow<'a, str>>,
    // Server → client only. The position fields are kept raw and read afterwards, so one of
    // the wrong type is ignored instead of failing the frame.
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offset: Option<&'a RawValue>,
    #[serde(borrow, default)]
    epoch: Option<&'a RawValue>,
}

/// A parsed client → server frame, borrowing from the frame's text.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// An event, with a callback id when the client wants a reply.
    Event {
        /// Event name.
        event: Cow<'a, str>,
        /// Raw JSON payload (`null` when absent).
        payload: &'a RawValue,
        /// The client's callback id, when it asked for a reply.
        callback_id: Option<Cow<'a, str>>,
    },
    /// The answer to a server → client request.
    Ack {
        /// The request's id.
        ack_id: Cow<'a, str>,
        /// Raw JSON payload (`null` when absent).
        payload: &'a RawValue,
    },
}

fn check_id(id: &str) -> Result<(), FrameError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_CALLBACK_ID_LEN {
        return Err(FrameError::BadCallbackId(n));
    }
    Ok(())
}

/// Parses a client text frame.
pub fn parse_incoming(text: &str) -> Result<Incoming<'_>, FrameError> {
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let payload = wire.payload.unwrap_or(RawValue::NULL);
    match (wire.event, wire.ack_id) {
        (Some(event), _) => {
            if let Some(id) = &wire.callback_id {
                check_id(id)?;
            }
            Ok(Incoming::Event {
                event,
                payload,
                callback_id: wire.callback_id,
            })
        }
        (None, Some(ack_id)) => {
            check_id(&ack_id)?;
            Ok(Incoming::Ack { ack_id, payload })
        }
        (None, None) => Err(FrameError::NoEvent),
    }
}

#[derive(Serialize)]
struct OutEvent<'a, T: ?Sized> {
    event: &'a str,
    payload: &'a T,
    #[serde(rename = "ackId", skip_serializing_if = "Option::is_none")]
    ack_id: Option<&'a str>,
}

#[derive(Serialize)]
struct OutReply<'a, T: ?Sized> {
    #[serde(rename = "callbackId")]
    callback_id: &'a str,
    payload: &'a T,
}

#[derive(Serialize)]
struct OutAck<'a, T: ?Sized> {
    #[serde(rename = "ackId")]
    ack_id: &'a str,
    payload: &'a T,
}

/// Scratch buffers kept for serialising beyond this size are given back.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where values are serialised before being copied into a frame of the exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serialises `value` as JSON into a text frame: into a per-thread scratch buffer first, so
/// the frame is one allocation of the exact size (no growing, no slack kept alive in send
/// queues).
fn to_frame<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    let frame_of = |json: &[u8]| {
        build_frame::<std::convert::Infallible>(OpCode::Text, json.len(), |buf| {
            buf.put_slice(json);
            Ok(())
        })
    };
    SCRATCH.with(|cell| {
        // A `Serialize` impl that encodes a frame itself gets a fresh buffer.
        let Ok(mut scratch) = cell.try_borrow_mut() else {
            let json = serde_json::to_vec(value)?;
            return Ok(frame_of(&json).unwrap_or_else(|never| match never {}));
        };
        scratch.clear();
        let result = serde_json::to_writer(&mut *scratch, value);
        let frame = result.map(|()| frame_of(&scratch).unwrap_or_else(|never| match never {}));
        if scratch.capacity() > SCRATCH_KEEP {
            *scratch = Vec::new();
        }
        frame
    })
}

/// Encodes a server → client event as a complete WebSocket text frame.
pub fn encode_event<T: Serialize + ?Sized>(
    event: &str,
    payload: &T,
) -> Result<Bytes, serde_json::Error> {
    to_frame(&OutEvent {
        event,
        payload,
        ack_id: None,
    })
}

/// Encodes a server → client event whose payload is already JSON text, without re-parsing it.
pub fn encode_event_raw(event: &str, payload: &RawValue) -> Bytes {
    let raw = payload.get();
    let frame = build_frame::<std::convert::Infallible>(
        OpCode::Text,
        raw.len() + event.len() + 24,
        |buf| {
            buf.put_slice(b"{\"event\":");
            write_json_str(buf, event);
            buf.put_slice(b",\"payload\":");
            buf.put_slice(raw.as_bytes());
            buf.put_u8(b'}');
            Ok(())
        },
    );
    match frame {
        Ok(f) => f,
        Err(never) => match never {},
    }
}

/// The event frame `frame` with its place in a history stream added:
/// `{"event", "payload", "stream", "offset", "epoch"}` (clients that do not know the fields
/// ignore them). `None` when `frame` is not one unmasked, final text frame holding a JSON
/// object, as [`encode_event`] and [`encode_event_raw`] make.
pub fn with_position(frame: &[u8], stream: &str, offset: u64, epoch: &str) -> Option<Bytes> {
    let text = server_text(frame)?;
    let body = text.strip_suffix(b"}")?;
    let extra = stream.len() + epoch.len() + 64;
    let frame = build_frame::<std::convert::Infallible>(OpCode::Text, text.len() + extra, |buf| {
        buf.put_slice(body);
        buf.put_slice(b",\"stream\":");
        write_json_str(buf, stream);
        buf.put_slice(b",\"offset\":");
        buf.put_slice(offset.to_string().as_bytes());
        buf.put_slice(b",\"epoch\":");
        write_json_str(buf, epoch);
        buf.put_u8(b'}');
        Ok(())
    });
    match frame {
        Ok(f) => Some(f),
        Err(never) => match never {},
    }
}

/// The payload of one unmasked, final text frame (as a server sends), or `None`.
fn server_text(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b0 != 0x80 | OpCode::Text as u8 || b1 & 0x80 != 0 {
        return None;
    }
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (n, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*n)), rest)
        }
        127 => {
            let (n, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*n), rest)
        }
        n => (u64::from(n), rest),
    };
    (rest.len() as u64 == len).then_some(rest)
}

/// Encodes a server → client request: an event carrying an `ackId` that crosswire clients
/// answer and older clients ignore.
pub fn encode_request<T: Serialize + ?Sized>(
    event: &str,
    payload: &T,
    ack_id: &str,
) -> Result<Bytes, serde_json::Error> {
    to_frame(&OutEvent {
        event,
        payload,
        ack_id: Some(ack_id),
    })
}

/// Encodes the reply to a client event that carried `callbackId`.
pub fn encode_reply<T: Serialize + ?Sized>(
    callback_id: &str,
    payload: &T,
) -> Result<Bytes, serde_json::Error> {
    to_frame(&OutReply {
        callback_id,
        payload,
    })
}

/// Encodes a client's answer to a server request, as JSON text (clients mask and frame it).
pub fn encode_ack_text<T: Serialize + ?Sized>(
    ack_id: &str,
    payload: &T,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&OutAck { ack_id, payload })
}

/// Encodes a client → server event as JSON text.
pub fn encode_client_event<T: Serialize + ?Sized>(
    event: &str,
    payload: &T,
    callback_id: Option<&str>,
) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Out<'a, T: ?Sized> {
        event: &'a str,
        payload: &'a T,
        #[serde(rename = "callbackId", skip_serializing_if = "Option::is_none")]
        callback_id: Option<&'a str>,
    }
    serde_json::to_string(&Out {
        event,
        payload,
        callback_id,
    })
}

fn write_json_str(buf: &mut BytesMut, s: &str) {
    // Plain ASCII without quotes, backslashes or control characters is copied as is; anything
    // else goes through serde_json's escaper.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        buf.put_u8(b'"');
        buf.put_slice(s.as_bytes());
        buf.put_u8(b'"');
    } else if serde_json::to_writer(buf.writer(), s).is_err() {
        // Serialising a &str into memory cannot fail; keep the frame valid regardless.
        buf.put_slice(b"\"\"");
    }
}

/// Where an event sits in a history stream: the `stream`, `offset` and `epoch` fields a
/// server with history adds to the events of a room (docs/PROTOCOL.md, "History and
/// recovery"; written by [`with_position`]). Borrowed from the frame's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition<'a> {
    /// The stream's name (`<namespace>/<room>`, or `@<id>`), an opaque key.
    pub stream: Cow<'a, str>,
    /// The event's place in the stream: 1, 2, 3, … with no gap within one epoch.
    pub offset: u64,
    /// Opaque text naming the stream's history; offsets start again in a new epoch.
    pub epoch: Cow<'a, str>,
}

impl<'a> StreamPosition<'a> {
    /// The position from the raw fields, when all three are present with the right types.
    fn from_raw(
        stream: Option<&'a RawValue>,
        offset: Option<&'a RawValue>,
        epoch: Option<&'a RawValue>,
    ) -> Option<Self> {
        /// A JSON string, borrowed unless it has escapes.
        #[derive(Deserialize)]
        struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
        let text = |raw: &'a RawValue| serde_json::from_str::<Text<'a>>(raw.get()).ok();
        Some(Self {
            stream: text(stream?)?.0,
            offset: serde_json::from_str(offset?.get()).ok()?,
            epoch: text(epoch?)?.0,
        })
    }
}

/// Parsed server → client frame, as a client sees it.
#[derive(Debug)]
pub enum ServerFrame<'a> {
    /// An event, possibly a request carrying an `ackId`.
    Event {
        /// Event name.
        event: Cow<'a, str>,
        /// Raw payload.
        payload: &'a RawValue,
        /// Present when the server expects an answer.
        ack_id: Option<Cow<'a, str>>,
        /// The event's place in its history stream, when the frame has `stream` (a string),
        /// `offset` (an unsigned integer) and `epoch` (a string). A missing or mistyped field
        /// leaves it `None`; the event itself is still parsed.
        position: Option<StreamPosition<'a>>,
    },
    /// A reply to the client's `callbackId`.
    Reply {
        /// The client's callback id.
        callback_id: Cow<'a, str>,
        /// Raw payload.
        payload: &'a RawValue,
    },
}

/// Parses a server → client text frame, with the position fields of a positioned event.
pub fn parse_server_frame(text: &str) -> Result<ServerFrame<'_>, FrameError> {
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let payload = wire.payload.unwrap_or(RawValue::NULL);
    match (wire.event, wire.callback_id) {
        (Some(event), _) => Ok(ServerFrame::Event {
            event,
            payload,
            ack_id: wire.ack_id,
            position: StreamPosition::from_raw(wire.stream, wire.offset, wire.epoch),
        }),
        (None, Some(callback_id)) => Ok(ServerFrame::Reply {
            callback_id,
            payload,
        }),
        (None, None) => Err(FrameError::NoEvent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{Decoded, Decoder, Message, Role};

    fn text_of(frame: &Bytes) -> String {
        let mut v = frame.to_vec();
        let mut d = Decoder::new(Role::Client, 1 << 24);
        match d.decode(&mut v).unwrap() {
            Decoded::Message(Message::Text(t), _) => t.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn positions_are_added_to_event_frames_of_any_length() {
        for size in [3usize, 200, 70_000] {
            let payload = "x".repeat(size);
            let frame = encode_event("msg", &payload).unwrap();
            let positioned = with_position(&frame, "chat/lobby", 42, "e\"1").unwrap();
            let value: serde_json::Value = serde_json::from_str(&text_of(&positioned)).unwrap();
            assert_eq!(value["event"], "msg");
            assert_eq!(value["payload"], payload.as_str());
            assert_eq!(value["stream"], "chat/lobby");
            assert_eq!(value["offset"], 42);
            assert_eq!(value["epoch"], "e\"1");
        }
        let raw = encode_event_raw("m", RawValue::from_string("[1]".into()).unwrap().as_ref());
        assert!(with_position(&raw, "s", 1, "e").is_some());
        // Not a server text frame holding an object: left alone.
        assert!(
            with_position(&crate::ws::server_frame(OpCode::Binary, b"{}"), "s", 1, "e").is_none()
        );
        assert!(
            with_position(&crate::ws::server_frame(OpCode::Text, b"[1]"), "s", 1, "e").is_none()
        );
        let frame = encode_event("msg", &1).unwrap();
        assert!(with_position(&frame[..frame.len() - 1], "s", 1, "e").is_none());
        assert!(with_position(b"", "s", 1, "e").is_none());
    }

    #[test]
    fn parses_seed_frames() {
        match parse_incoming(r#"{"event":"say","payload":{"msg":"hi"},"callbackId":"17"}"#).unwrap()
        {
            Incoming::Event {
                event,
                payload,
                callback_id,
            } => {
                assert_eq!(event, "say");
                assert_eq!(payload.get(), r#"{"msg":"hi"}"#);
                assert_eq!(callback_id.as_deref(), Some("17"));
            }
            other => panic!("{other:?}"),
        }
        match parse_incoming(r#"{"event":"x"}"#).unwrap() {
            Incoming::Event { payload, .. } => assert_eq!(payload.get(), "null"),
            other => panic!("{other:?}"),
        }
        match parse_incoming(r#"{"ackId":"s1","payload":[1,2]}"#).unwrap() {
            Incoming::Ack { ack_id, payload } => {
                assert_eq!(ack_id, "s1");
                assert_eq!(payload.get(), "[1,2]");
            }
            other => panic!("{other:?}"),
        }
        // Escaped event names are decoded.
        match parse_incoming(r#"{"event":"a\"b","payload":1}"#).unwrap() {
            Incoming::Event { event, .. } => assert_eq!(event, "a\"b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(parse_incoming("hello"), Err(FrameError::Json(_))));
        assert!(matches!(
            parse_incoming(r#"{"payload":1}"#),
            Err(FrameError::NoEvent)
        ));
        assert!(matches!(
            parse_incoming(r#"{"event":5}"#),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            parse_incoming(r#"[1,2]"#),
            Err(FrameError::Json(_))
        ));
        let long = "x".repeat(65);
        let frame = format!(r#"{{"event":"a","callbackId":"{long}"}}"#);
        assert!(matches!(
            parse_incoming(&frame),
            Err(FrameError::BadCallbackId(65))
        ));
        assert!(matches!(
            parse_incoming(r#"{"event":"a","callbackId":""}"#),
            Err(FrameError::BadCallbackId(0))
        ));
        // Deep nesting never overflows the stack: the outer document is refused past
        // serde_json's recursion limit, and a deep payload stays raw until someone parses it,
        // which is refused cleanly as well.
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert!(matches!(parse_incoming(&deep), Err(FrameError::Json(_))));
        let deep = format!(
            r#"{{"event":"a","payload":{}{}}}"#,
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        if let Ok(Incoming::Event { payload, .. }) = parse_incoming(&deep) {
            assert!(serde_json::from_str::<serde_json::Value>(payload.get()).is_err());
        }
    }

    #[test]
    fn encodes_exact_seed_frames() {
        let ev = encode_event("msg", &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(text_of(&ev), r#"{"event":"msg","payload":{"a":1}}"#);
        let raw = RawValue::from_string(r#"{ "b" : [1, 2] }"#.to_string()).unwrap();
        let ev = encode_event_raw("m\"s\ng", &raw);
        assert_eq!(
            text_of(&ev),
            r#"{"event":"m\"s\ng","payload":{ "b" : [1, 2] }}"#
        );
        let rep = encode_reply("cb1", &serde_json::json!({"ok": true})).unwrap();
        assert_eq!(
            text_of(&rep),
            r#"{"callbackId":"cb1","payload":{"ok":true}}"#
        );
        let req = encode_request("ask", &1, "s7").unwrap();
        assert_eq!(text_of(&req), r#"{"event":"ask","payload":1,"ackId":"s7"}"#);
        match parse_server_frame(&text_of(&req)).unwrap() {
            ServerFrame::Event { ack_id, .. } => assert_eq!(ack_id.as_deref(), Some("s7")),
            other => panic!("{other:?}"),
        }
    }

    fn server_event(text: &str) -> (String, String, Option<String>, Option<StreamPosition<'_>>) {
        match parse_server_frame(text).unwrap() {
            ServerFrame::Event {
                event,
                payload,
                ack_id,
                position,
            } => (
                event.into_owned(),
                payload.get().to_string(),
                ack_id.map(Cow::into_owned),
                position,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_frames_without_position() {
        assert_eq!(
            server_event(r#"{"event":"say","payload":{"msg":"hi"}}"#),
            ("say".into(), r#"{"msg":"hi"}"#.into(), None, None)
        );
        assert_eq!(
            server_event(r#"{"event":"ask","payload":1,"ackId":"s7"}"#),
            ("ask".into(), "1".into(), Some("s7".into()), None)
        );
        assert_eq!(server_event(r#"{"event":"x"}"#).1, "null");
        match parse_server_frame(r#"{"callbackId":"3","payload":[1]}"#).unwrap() {
            ServerFrame::Reply {
                callback_id,
                payload,
            } => {
                assert_eq!(callback_id, "3");
                assert_eq!(payload.get(), "[1]");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_server_frame(r#"{"payload":1}"#),
            Err(FrameError::NoEvent)
        ));
        assert!(matches!(
            parse_server_frame("nope"),
            Err(FrameError::Json(_))
        ));
        assert!(matches!(
            parse_server_frame(r#"{"event":5}"#),
            Err(FrameError::Json(_))
        ));
    }

    #[test]
    fn server_frames_with_position() {
        let text = r#"{"event":"msg","payload":{"t":"hi"},"stream":"relay/lobby","offset":42,"epoch":"18f3-0"}"#;
        let (name, payload, ack_id, position) = server_event(text);
        assert_eq!((name.as_str(), payload.as_str()), ("msg", r#"{"t":"hi"}"#));
        assert_eq!(ack_id, None);
        let position = position.unwrap();
        assert!(matches!(position.stream, Cow::Borrowed("relay/lobby")));
        assert_eq!(position.offset, 42);
        assert!(matches!(position.epoch, Cow::Borrowed("18f3-0")));
        // Escaped text is decoded; a request can be positioned too.
        let text = r#"{"event":"m","ackId":"a","stream":"a\"b","offset":18446744073709551615,"epoch":"\u0065"}"#;
        let (_, _, ack_id, position) = server_event(text);
        assert_eq!(ack_id.as_deref(), Some("a"));
        assert_eq!(
            position,
            Some(StreamPosition {
                stream: "a\"b".into(),
                offset: u64::MAX,
                epoch: "e".into(),
            })
        );
        // What `with_position` writes parses back.
        let frame =
            with_position(&encode_event("msg", &[1]).unwrap(), "chat/l", 7, "e\"1").unwrap();
        let text = text_of(&frame);
        let (name, payload, _, position) = server_event(&text);
        assert_eq!((name.as_str(), payload.as_str()), ("msg", "[1]"));
        assert_eq!(
            position,
            Some(StreamPosition {
                stream: "chat/l".into(),
                offset: 7,
                epoch: "e\"1".into(),
            })
        );
    }

    #[test]
    fn server_position_fields_of_the_wrong_type_are_ignored() {
        for text in [
            r#"{"event":"m","payload":1,"stream":"s","offset":1}"#,
            r#"{"event":"m","payload":1,"offset":1,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":-1,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":1.5,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":1e3,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":18446744073709551616,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":"1","epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":null,"offset":1,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":{"a":[1,{"b":2}]},"offset":1,"epoch":"e"}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":1,"epoch":[null,true]}"#,
            r#"{"event":"m","payload":1,"stream":"s","offset":1,"epoch":false}"#,
        ] {
            let (name, payload, _, position) = server_event(text);
            assert_eq!((name.as_str(), payload.as_str()), ("m", "1"), "{text}");
            assert!(position.is_none(), "{text}");
        }
        // Replies never carry a position.
        assert!(matches!(
            parse_server_frame(
                r#"{"callbackId":"1","payload":1,"stream":"s","offset":1,"epoch":"e"}"#
            ),
            Ok(ServerFrame::Reply { .. })
        ));
        // The frame itself must still be JSON.
        assert!(matches!(
            parse_server_frame(r#"{"event":"m","stream":"s","offset":01,"epoch":"e"}"#),
            Err(FrameError::Json(_))
        ));
    }
}

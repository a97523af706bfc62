//! Wire formats of crosswire, with no async runtime attached.
//!
//! ```
//! use crosswire_protocol::{frame, ws};
//!
//! // A server → client event, encoded once as a complete WebSocket text frame.
//! let bytes = frame::encode_event("msg", &serde_json::json!({"hello": "world"})).unwrap();
//! let mut decoder = ws::Decoder::new(ws::Role::Client, 1 << 20);
//! let mut buf = bytes.to_vec();
//! match decoder.decode(&mut buf).unwrap() {
//!     ws::Decoded::Message(ws::Message::Text(text), used) => {
//!         assert_eq!(used, bytes.len());
//!         assert_eq!(text, r#"{"event":"msg","payload":{"hello":"world"}}"#);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
//!
//! # Layout
//! - [`ws`]: RFC 6455 frames — a zero-copy incremental [`ws::Decoder`] that unmasks in place,
//!   header encoding for frames built once and shared, the handshake accept key.
//! - [`frame`]: the JSON frames of the client protocol (`{"event", "payload", "callbackId"}`),
//!   parsed with borrowed fields and raw payloads, encoded straight into WebSocket frames.
//! - [`deflate`]: permessage-deflate (RFC 7692) without context takeover: negotiation, a
//!   frame compressed once for every recipient, bounded inflation.
//! - [`envelope`]: the MessagePack envelope that crosses the broker between nodes.
//!
//! A hidden `fuzzing` module holds the per-input checks run by the fuzz targets and the
//! bounded fuzz tests (`docs/FUZZING.md`); it is not part of the API.
#![warn(missing_docs)]

pub mod deflate;
pub mod envelope;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod wire;
pub mod ws;

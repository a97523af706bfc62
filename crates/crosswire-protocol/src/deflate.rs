//! permessage-deflate (RFC 7692): negotiation, and compression of whole messages without
//! context takeover in either direction.
//!
//! crosswire answers every offer it accepts with `server_no_context_takeover` and
//! `client_no_context_takeover`: each message is compressed, and decompressed, on its own.
//! That costs some ratio on streams of small similar messages, and buys two things:
//!
//! - **A broadcast is compressed once.** Without context takeover, the compressed bytes of a
//!   message do not depend on what the connection carried before, so every recipient that
//!   negotiated the same window gets the very same frame, shared by reference count.
//! - **An idle connection holds no compression state.** The compressors and the
//!   decompressor live one per thread (as uWebSockets' shared compressor does), not one
//!   per connection (a zlib stream with a 32 KiB window costs some 300 KiB to compress and
//!   40 KiB to decompress).
//!
//! ```
//! use crosswire_protocol::deflate;
//! use crosswire_protocol::ws::{self, Decoded, Decoder, Message, Role};
//!
//! // The server picks the first offer it can honour and answers with its parameters.
//! let agreed = deflate::negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
//! assert_eq!(
//!     agreed.response,
//!     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
//! );
//!
//! // A frame is compressed once (RSV1 set) and inflated by a decoder that negotiated it.
//! let text = "hello hello hello hello hello hello hello hello";
//! let frame = deflate::encode_frame(ws::OpCode::Text, text.as_bytes(), None, agreed.params);
//! assert!(frame.len() < text.len());
//! let mut decoder = Decoder::new(Role::Client, 1 << 20).with_deflate(true);
//! let mut buf = frame.to_vec();
//! match decoder.decode(&mut buf).unwrap() {
//!     Decoded::Message(Message::Text(t), _) => assert_eq!(t, text),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use std::cell::RefCell;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::wire::{self, OpCode, MAX_HEADER_LEN};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The offer a client of crosswire sends: no context takeover either way, which is what a
/// decoder built with [`crate::ws::Decoder::with_deflate`] expects of its peer.
pub const CLIENT_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The tail every compressed message loses before it is sent and regains before it is
/// inflated (RFC 7692 §7.2.1): the empty stored block a sync flush ends with.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest LZ77 window zlib can compress with in raw mode: it turns a request for 8 into 9,
/// so an offer limiting the server to 8 is declined.
const MIN_WINDOW_BITS: u8 = 9;
/// Largest LZ77 window (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// What the two ends agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The LZ77 window the sender compresses with (9–15; 15 unless the peer asked for
    /// less with `server_max_window_bits`).
    pub window_bits: u8,
    /// zlib's compression level, 0–9 (1: fastest, the default of crosswire).
    pub level: u8,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            window_bits: MAX_WINDOW_BITS,
            level: 1,
        }
    }
}

/// An accepted offer: the parameters, and the `Sec-WebSocket-Extensions` value to answer
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// How this end compresses what it sends (the level is the default; set it afterwards).
    pub params: Params,
    /// The response header value.
    pub response: String,
}

/// Picks the first permessage-deflate offer in the request's `Sec-WebSocket-Extensions`
/// values that the server can honour; `None` when there is none (the connection then runs
/// without compression). An offer with an unknown or repeated parameter, or an invalid
/// value, is declined (RFC 7692 §7.1), as is one limiting the server's window to 8 bits.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    headers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One parsed `name[=value]` parameter of an extension offer.
struct Param<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

fn parse_param(raw: &str) -> Param<'_> {
    match raw.split_once('=') {
        Some((name, value)) => Param {
            name: name.trim(),
            value: Some(value.trim().trim_matches('"')),
        },
        None => Param {
            name: raw.trim(),
            value: None,
        },
    }
}

/// A window size as RFC 7692 writes it: 8–15, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.len() > 2 {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// The agreement for one offer (`permessage-deflate; param; …`), if acceptable.
fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: u8 = 0;
    let mut server_bits = None;
    for param in parts.map(parse_param) {
        let bit = match (param.name.to_ascii_lowercase().as_str(), param.value) {
            ("server_no_context_takeover", None) => 1,
            ("client_no_context_takeover", None) => 2,
            ("server_max_window_bits", Some(v)) => {
                server_bits = Some(window_bits(v)?);
                4
            }
            ("client_max_window_bits", None) => 8,
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
                8
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
    }
    let mut response =
        format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    let window_bits = match server_bits {
        Some(bits) if bits < MIN_WINDOW_BITS => return None,
        Some(bits) => {
            response.push_str(&format!("; server_max_window_bits={bits}"));
            bits
        }
        None => MAX_WINDOW_BITS,
    };
    Some(Agreement {
        params: Params {
            window_bits,
            ..Params::default()
        },
        response,
    })
}

/// Whether a server's `Sec-WebSocket-Extensions` answer accepted permessage-deflate.
pub fn accepted(response: &str) -> bool {
    response.split(',').any(|ext| {
        ext.split(';')
            .next()
            .is_some_and(|name| name.trim().eq_ignore_ascii_case(EXTENSION))
    })
}

thread_local! {
    /// Compressors by window and level, one per thread, reset after every message.
    static COMPRESSORS: RefCell<Vec<(Params, Compress)>> = const { RefCell::new(Vec::new()) };
    /// The decompressor (32 KiB window: it inflates what any window produced), reset before
    /// every message.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Appends the compressed form of `payload` (tail removed) to `out`.
fn compress_into(payload: &[u8], params: Params, out: &mut Vec<u8>) {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let index = match compressors.iter().position(|(p, _)| *p == params) {
            Some(i) => i,
            None => {
                let level = Compression::new(u32::from(params.level.min(9)));
                let bits = params.window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
                compressors.push((params, Compress::new_with_window_bits(level, false, bits)));
                compressors.len() - 1
            }
        };
        let compress = &mut compressors[index].1;
        deflate_sync(compress, payload, out);
        compress.reset();
    });
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

/// Compresses all of `input` with a sync flush, growing `out` as needed.
fn deflate_sync(compress: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = compress.total_in();
    out.reserve(input.len() / 2 + 64);
    loop {
        let consumed = (compress.total_in() - start) as usize;
        if compress
            .compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .is_err()
        {
            // Only a misuse of the stream fails; the caller then sends the message plain.
            out.clear();
            return;
        }
        let consumed = (compress.total_in() - start) as usize;
        // The flush is complete once zlib stops with room to spare.
        if consumed == input.len() && out.len() < out.capacity() {
            return;
        }
        out.reserve(out.capacity().max(256));
    }
}

/// A complete frame carrying `payload` compressed (RSV1 set), masked with `mask` when given
/// (a client's frame). The payload is compressed even if that makes it larger; see
/// [`compress_server_frame`] for the choice a sender makes.
pub fn encode_frame(
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    params: Params,
) -> Bytes {
    let mut compressed = Vec::new();
    compress_into(payload, params, &mut compressed);
    frame_with_rsv1(opcode, &compressed, mask)
}

fn frame_with_rsv1(opcode: OpCode, compressed: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + compressed.len());
    wire::encode_frame(&mut out, opcode, compressed, mask);
    out[0] |= RSV1;
    out.freeze()
}

/// The "compressed" bit of a frame's first byte.
pub const RSV1: u8 = 0x40;

/// The compressed form of a complete, unmasked server frame built by [`crate::ws`] or
/// [`crate::frame`]: `None` when the frame is not a whole text or binary message (a control
/// frame, a fragment, one already compressed).
///
/// An incompressible payload grows by a few bytes (5 per 64 KiB stored block), and is sent
/// compressed all the same: sending it plain would save those bytes only after paying for
/// the compression, and clients have been seen to mishandle plain messages in a compressed
/// session (the Autobahn runner kosoku 0.1.0 among them).
pub fn compress_server_frame(frame: &[u8], params: Params) -> Option<Bytes> {
    let (opcode, header) = plain_message_header(frame)?;
    let payload = &frame[header..];
    // Room for the header in front, so the compressed payload is written once, in place.
    let mut out = Vec::with_capacity(MAX_HEADER_LEN + payload.len() / 2 + 64);
    out.resize(MAX_HEADER_LEN, 0);
    compress_into(payload, params, &mut out);
    let len = out.len() - MAX_HEADER_LEN;
    if len == 0 {
        return None; // the compressor failed
    }
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = wire::encode_header(&mut head, true, opcode, len, None);
    head[0] |= RSV1;
    let start = MAX_HEADER_LEN - n;
    out[start..MAX_HEADER_LEN].copy_from_slice(&head[..n]);
    let mut bytes = Bytes::from(out);
    bytes.advance(start);
    Some(bytes)
}

/// The opcode and header length of an unmasked, final, uncompressed text or binary frame
/// whose length field matches the bytes given.
fn plain_message_header(frame: &[u8]) -> Option<(OpCode, usize)> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    let opcode = match b0 {
        0x81 => OpCode::Text,
        0x82 => OpCode::Binary,
        _ => return None,
    };
    let (len, header) = match b1 {
        126 => (
            u64::from(u16::from_be_bytes(frame.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?), 10),
        n if n < 126 => (u64::from(n), 2),
        _ => return None, // masked
    };
    (frame.len() as u64 == header as u64 + len).then_some((opcode, header))
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The data is not a valid DEFLATE stream.
    Invalid,
    /// It inflates to more than the allowed size.
    TooLarge,
}

/// Inflates one message compressed without context takeover into a new buffer of at most
/// `max` bytes. Memory grows with what the data really inflates to, never with a size the
/// peer claims, and stops just past `max`.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompress = slot.get_or_insert_with(|| Decompress::new(false));
        decompress.reset(false);
        let capacity = data
            .len()
            .saturating_mul(2)
            .max(64)
            .min(max.saturating_add(1));
        let mut out = Vec::with_capacity(capacity);
        for chunk in [data, &TAIL[..]] {
            if inflate_chunk(decompress, chunk, max, &mut out)? {
                break;
            }
        }
        Ok(out)
    })
}

/// Feeds one chunk; returns whether the stream ended (a final block was seen).
fn inflate_chunk(
    decompress: &mut Decompress,
    input: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<bool, InflateError> {
    let start = decompress.total_in();
    loop {
        let consumed = (decompress.total_in() - start) as usize;
        let before = out.len();
        let status = decompress
            .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Invalid)?;
        if out.len() > max {
            return Err(InflateError::TooLarge);
        }
        let consumed_now = (decompress.total_in() - start) as usize;
        match status {
            Status::StreamEnd => return Ok(true),
            _ if out.len() == out.capacity() => {
                let room = max.saturating_add(1) - out.len();
                out.reserve_exact(out.capacity().clamp(64, 1 << 20).min(room));
            }
            _ if consumed_now == input.len() => return Ok(false),
            // Neither input taken nor output made, with room left: the data is cut short
            // in a way more input cannot mend.
            _ if consumed_now == consumed && out.len() == before => {
                return Err(InflateError::Invalid)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &str) -> Option<Agreement> {
        negotiate([s])
    }

    #[test]
    fn negotiation_accepts_the_usual_offers() {
        let base = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        for o in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
            "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame, permessage-deflate",
        ] {
            let a = offer(o).unwrap_or_else(|| panic!("{o} declined"));
            assert_eq!(a.response, base, "{o}");
            assert_eq!(a.params.window_bits, 15);
        }
        let a = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(a.params.window_bits, 10);
        assert_eq!(a.response, format!("{base}; server_max_window_bits=10"));
        let a = offer("permessage-deflate; server_max_window_bits=\"12\"").unwrap();
        assert_eq!(a.params.window_bits, 12);
    }

    #[test]
    fn negotiation_declines_bad_offers_and_falls_back() {
        for o in [
            "deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
        ] {
            assert_eq!(offer(o), None, "{o} accepted");
        }
        let a = negotiate([
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=9",
        ])
        .unwrap();
        assert_eq!(a.params.window_bits, 9);
        let a = offer("permessage-deflate; server_max_window_bits=8, permessage-deflate").unwrap();
        assert_eq!(a.params.window_bits, 15);
        assert!(accepted("permessage-deflate; server_no_context_takeover"));
        assert!(!accepted("x-other"));
    }

    #[test]
    fn compress_then_inflate_round_trips_every_window() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"n\":{},\"room\":\"lobby\"}}", i % 97).into_bytes())
            .collect();
        for bits in 9..=15 {
            let params = Params {
                window_bits: bits,
                level: 1,
            };
            let mut out = Vec::new();
            compress_into(&text, params, &mut out);
            assert!(out.len() < text.len() / 4, "window {bits}: {}", out.len());
            assert_eq!(inflate(&out, text.len()).unwrap(), text);
            // The same bytes again: no context was carried over.
            let mut again = Vec::new();
            compress_into(&text, params, &mut again);
            assert_eq!(out, again);
        }
    }

    #[test]
    fn inflate_is_bounded_and_rejects_garbage() {
        let zeros = vec![0u8; 1 << 20];
        let mut bomb = Vec::new();
        compress_into(&zeros, Params::default(), &mut bomb);
        assert!(bomb.len() < zeros.len() / 50, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1000), Err(InflateError::TooLarge));
        assert_eq!(inflate(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Invalid)
        );
        assert_eq!(inflate(&[], 1000), Ok(Vec::new()));
    }

    #[test]
    fn only_whole_data_frames_are_compressed() {
        let big = crate::frame::encode_event("msg", &"a".repeat(1000)).unwrap();
        let small = wire::server_frame(OpCode::Text, b"hi");
        let ping = wire::server_frame(OpCode::Ping, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        let compressed = compress_server_frame(&big, Params::default()).unwrap();
        assert_eq!(compressed[0], 0x80 | RSV1 | 0x1);
        assert!(compressed.len() < 100);
        let c = compress_server_frame(&small, Params::default()).unwrap();
        assert_eq!(c[0], 0x80 | RSV1 | 0x1);
        assert_eq!(compress_server_frame(&ping, Params::default()), None);
        assert_eq!(compress_server_frame(&compressed, Params::default()), None);
        assert_eq!(
            compress_server_frame(&big[..big.len() - 1], Params::default()),
            None
        );
        let long = wire::server_frame(OpCode::Binary, &vec![7u8; 70_000]);
        let c = compress_server_frame(&long, Params::default()).unwrap();
        assert_eq!(c[0], 0x80 | RSV1 | 0x2);
    }
}

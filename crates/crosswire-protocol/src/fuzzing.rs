//! Per-input checks shared by the coverage-guided fuzz targets (`fuzz/` at the repository root)
//! and the bounded, deterministic tests (`tests/fuzz_bounded.rs`). **Not part of the API**:
//! hidden from the docs and free to change in any release.
//!
//! Each function takes arbitrary input, drives one decoder with it and **panics when an
//! invariant is broken** — that is how libFuzzer and the tests notice. The decoders themselves
//! never panic on input; only the checks here do. On success each returns a summary that the
//! tests assert on. See `docs/FUZZING.md`.

use serde_json::value::RawValue;

use crate::envelope::{Codec, Envelope, EnvelopeError, MARKER_LZ4, MARKER_PLAIN};
use crate::frame::{self, FrameError, Incoming, ServerFrame, MAX_CALLBACK_ID_LEN};
use crate::ws::{
    is_valid_close_code, Decoded, Decoder, Message, ProtocolError, Role, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_LEN,
};

/// The message size limits [`ws_decoder`] picks from (bits 1–3 of its first byte): none at
/// all, tiny ones around the control-frame and 7-bit length boundaries, and large ones.
pub const WS_MAX_MESSAGES: [usize; 8] = [0, 1, 16, 125, 126, 4096, 1 << 20, usize::MAX];

/// Bytes at the start of a [`ws_decoder`] input that configure the run (role, limit and the
/// sizes of the reads the stream is cut into) rather than being fed to the decoder.
pub const WS_CONFIG_LEN: usize = 5;

/// What one run of the WebSocket decoder over a stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSummary {
    /// Complete messages and control frames decoded.
    pub messages: usize,
    /// Fragments of fragmented messages taken in.
    pub fragments: usize,
    /// The protocol error that ended the stream, if any.
    pub error: Option<ProtocolError>,
    /// Bytes left over at the end, an incomplete frame (0 when the stream ended in an error).
    pub leftover: usize,
}

/// One thing the decoder reported, kept to compare runs over differently cut streams.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Fragment(usize),
}

#[derive(Debug, PartialEq, Eq)]
struct WsTrace {
    events: Vec<WsEvent>,
    error: Option<ProtocolError>,
    leftover: usize,
}

/// Fuzzes [`Decoder`]: the first [`WS_CONFIG_LEN`] bytes choose the role (bit 0 of byte 0:
/// server or client), the limit (bits 1–3, an index into [`WS_MAX_MESSAGES`]), whether
/// permessage-deflate is on (bit 4: compressed messages are inflated) and four read
/// sizes (bytes 1–4, each 1–256); the rest is the byte stream.
///
/// The stream is decoded three times — in one read, in reads of the chosen sizes and one
/// byte per read — as a connection would, decoding until `Incomplete` or an error. Checked:
/// every step consumes bytes (so decoding ends), stays within the buffer, never delivers a
/// message above the limit nor assembles fragments beyond it, never waits for a frame larger
/// than the limit allows, and the three runs report exactly the same messages and error.
pub fn ws_decoder(data: &[u8]) -> WsSummary {
    let (config, stream) = data.split_at(WS_CONFIG_LEN.min(data.len()));
    let first = config.first().copied().unwrap_or(0);
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = WS_MAX_MESSAGES[usize::from((first >> 1) & 7)];
    let reads: Vec<usize> = if config.len() > 1 {
        config[1..].iter().map(|&b| usize::from(b) + 1).collect()
    } else {
        vec![1]
    };
    let deflate = first & 0x10 != 0;
    ws_stream_with(role, max, deflate, stream, &reads)
}

/// Runs the checks of [`ws_decoder`] on `stream` for the given role and limit, cut into reads
/// of the sizes in `reads` (cycled; sizes of 0 count as 1).
pub fn ws_stream(role: Role, max_message: usize, stream: &[u8], reads: &[usize]) -> WsSummary {
    ws_stream_with(role, max_message, false, stream, reads)
}

/// [`ws_stream`] with permessage-deflate negotiated or not.
pub fn ws_stream_with(
    role: Role,
    max_message: usize,
    deflate: bool,
    stream: &[u8],
    reads: &[usize],
) -> WsSummary {
    let run = |reads: &[usize]| {
        ws_run(
            Decoder::new(role, max_message).with_deflate(deflate),
            max_message,
            stream,
            reads,
        )
    };
    let whole = run(&[stream.len().max(1)]);
    let cut = run(reads);
    assert_eq!(whole, cut, "decoding depends on how the stream is cut");
    let bytewise = run(&[1]);
    assert_eq!(whole, bytewise, "decoding one byte at a time differs");
    let fragments = whole
        .events
        .iter()
        .filter(|e| matches!(e, WsEvent::Fragment(_)))
        .count();
    WsSummary {
        messages: whole.events.len() - fragments,
        fragments,
        error: whole.error,
        leftover: whole.leftover,
    }
}

/// Length of the header of the complete frame at the front of `frame`, read independently of
/// the decoder.
fn header_len(frame: &[u8]) -> usize {
    let b1 = frame.get(1).copied().unwrap_or(0);
    let extended = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// Decodes `stream` as a connection does: append a read to the buffer, decode until
/// `Incomplete`, drop what was consumed, read again.
fn ws_run(mut decoder: Decoder, max: usize, stream: &[u8], reads: &[usize]) -> WsTrace {
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut read = 0;
    let mut events = Vec::new();
    // Payload bytes of the fragmented message in progress, counted here from the headers.
    let mut assembled: usize = 0;
    let mut compressed = false;
    loop {
        let mut pos = 0;
        loop {
            let available = buf.len() - pos;
            let header = header_len(&buf[pos..]);
            let fragmented_before = decoder.in_fragmented_message();
            // RSV1 on a message's first frame: compressed, so its length is not its frames'.
            if !fragmented_before {
                compressed = buf.get(pos).is_some_and(|b| b & 0x40 != 0);
            }
            let (event, used) = match decoder.decode(&mut buf[pos..]) {
                Err(error) => {
                    // How much of the stream had been read when the error showed depends on
                    // the reads: the leftover is not compared.
                    return WsTrace {
                        events,
                        error: Some(error),
                        leftover: 0,
                    };
                }
                Ok(Decoded::Incomplete { needed }) => {
                    if let Some(needed) = needed {
                        assert!(
                            needed > available,
                            "incomplete with {available} of {needed}"
                        );
                        let largest = max.max(MAX_CONTROL_PAYLOAD).saturating_add(MAX_HEADER_LEN);
                        assert!(needed <= largest, "waits for {needed} bytes, limit {max}");
                    }
                    break;
                }
                Ok(Decoded::Fragment(used)) => (WsEvent::Fragment(used), used),
                Ok(Decoded::Message(message, used)) => (owned(message), used),
            };
            assert!(used > 0, "a step consumed no bytes");
            assert!(used <= available, "consumed {used} of {available} bytes");
            assert!(used >= header, "frame of {used} bytes, header {header}");
            let payload = used - header;
            let fragmented_after = decoder.in_fragmented_message();
            match &event {
                WsEvent::Fragment(_) => {
                    assembled += payload;
                    assert!(assembled <= max, "assembled {assembled} bytes, limit {max}");
                    assert!(fragmented_after, "no message in progress after a fragment");
                }
                WsEvent::Text(_) | WsEvent::Binary(_) => {
                    let len = match &event {
                        WsEvent::Text(t) => t.len(),
                        WsEvent::Binary(b) => b.len(),
                        _ => 0,
                    };
                    let expected = if fragmented_before {
                        assembled + payload
                    } else {
                        payload
                    };
                    if !compressed {
                        assert_eq!(len, expected, "message length against its frames");
                    }
                    assert!(len <= max, "message of {len} bytes, limit {max}");
                    assert!(!fragmented_after, "message in progress after a whole one");
                    assembled = 0;
                }
                WsEvent::Ping(p) | WsEvent::Pong(p) => {
                    assert_eq!(p.len(), payload, "control payload against its frame");
                    assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                    assert_eq!(
                        fragmented_before, fragmented_after,
                        "control frame changed state"
                    );
                }
                WsEvent::Close(close) => {
                    let len = close.as_ref().map_or(0, |(_, reason)| 2 + reason.len());
                    assert_eq!(len, payload, "close payload against its frame");
                    assert!(len <= MAX_CONTROL_PAYLOAD);
                    if let Some((code, _)) = close {
                        assert!(is_valid_close_code(*code), "close code {code}");
                    }
                    assert_eq!(
                        fragmented_before, fragmented_after,
                        "control frame changed state"
                    );
                }
            }
            events.push(event);
            pos += used;
        }
        buf.drain(..pos);
        if fed == stream.len() {
            return WsTrace {
                events,
                error: None,
                leftover: buf.len(),
            };
        }
        let size = reads.get(read % reads.len().max(1)).copied().unwrap_or(1);
        let end = (fed + size.max(1)).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        read += 1;
    }
}

/// An owned copy of a decoded message.
fn owned(message: Message<'_>) -> WsEvent {
    match message {
        Message::Text(t) => WsEvent::Text(t.to_owned()),
        Message::Binary(b) => WsEvent::Binary(b.to_vec()),
        Message::Ping(p) => WsEvent::Ping(p.to_vec()),
        Message::Pong(p) => WsEvent::Pong(p.to_vec()),
        Message::Close(close) => WsEvent::Close(close.map(|c| (c.code, c.reason.to_owned()))),
    }
}

/// Fuzzes [`frame::parse_incoming`] on arbitrary text (and [`frame::parse_server_frame`] on
/// the same text). What parses must be well formed (ids of 1–64 characters, a payload that is
/// one JSON value) and must survive the trip through the matching encoder: an event
/// re-encoded as a server frame, a callback id as a reply, an ack as a client ack all parse
/// back to the same fields.
pub fn client_frame(text: &str) -> Result<Incoming<'_>, FrameError> {
    let _ = frame::parse_server_frame(text);
    let incoming = frame::parse_incoming(text)?;
    match &incoming {
        Incoming::Event {
            event,
            payload,
            callback_id,
        } => {
            check_payload(payload);
            let encoded = frame::encode_event_raw(event, payload);
            match parse_server_bytes(&encoded, |frame| match frame {
                ServerFrame::Event {
                    event: e,
                    payload: p,
                    ack_id: None,
                    position: None,
                } => e == event && p.get() == payload.get(),
                _ => false,
            }) {
                Some(true) => {}
                other => panic!("event {event:?} did not round-trip: {other:?}"),
            }
            if let Some(id) = callback_id {
                check_id(id);
                let reply = frame::encode_reply(id, payload);
                let Ok(reply) = reply else {
                    panic!("reply to {id:?} did not encode: {reply:?}");
                };
                match parse_server_bytes(&reply, |frame| match frame {
                    ServerFrame::Reply {
                        callback_id: c,
                        payload: p,
                    } => c == id && p.get() == payload.get(),
                    _ => false,
                }) {
                    Some(true) => {}
                    other => panic!("reply to {id:?} did not round-trip: {other:?}"),
                }
            }
        }
        Incoming::Ack { ack_id, payload } => {
            check_id(ack_id);
            check_payload(payload);
            let encoded = frame::encode_ack_text(ack_id, payload);
            let Ok(encoded) = encoded else {
                panic!("ack {ack_id:?} did not encode: {encoded:?}");
            };
            match frame::parse_incoming(&encoded) {
                Ok(Incoming::Ack {
                    ack_id: a,
                    payload: p,
                }) => assert!(a == *ack_id && p.get() == payload.get(), "{encoded}"),
                other => panic!("ack {ack_id:?} did not round-trip: {other:?}"),
            }
        }
    }
    Ok(incoming)
}

fn check_id(id: &str) {
    let n = id.chars().count();
    assert!(
        (1..=MAX_CALLBACK_ID_LEN).contains(&n),
        "id of {n} characters"
    );
}

fn check_payload(payload: &RawValue) {
    let text = payload.get();
    let reparsed: Result<&RawValue, _> = serde_json::from_str(text);
    assert!(
        reparsed.is_ok_and(|r| r.get() == text),
        "payload {text:?} is not one JSON value"
    );
}

/// Decodes a complete server frame and applies `check` to what it parses to; `None` when it
/// is not one text frame that parses.
fn parse_server_bytes(frame: &[u8], check: impl Fn(&ServerFrame<'_>) -> bool) -> Option<bool> {
    let mut buf = frame.to_vec();
    let mut decoder = Decoder::new(Role::Client, usize::MAX);
    match decoder.decode(&mut buf) {
        Ok(Decoded::Message(Message::Text(text), used)) if used == frame.len() => {
            frame::parse_server_frame(text).ok().map(|f| check(&f))
        }
        _ => None,
    }
}

/// The smallest decompression limit [`envelope`] tries, low enough that inputs of a few
/// kilobytes reach it.
pub const ENVELOPE_SMALL_LIMIT: usize = 256;

/// What the three codecs of [`envelope`] made of one input.
#[derive(Debug)]
pub struct EnvelopeSummary {
    /// A codec with compression off.
    pub plain: Result<Envelope, EnvelopeError>,
    /// A codec with compression on and the default decompression limit.
    pub compressed: Result<Envelope, EnvelopeError>,
    /// A codec with compression on and a limit of [`ENVELOPE_SMALL_LIMIT`] bytes.
    pub small_limit: Result<Envelope, EnvelopeError>,
}

/// Fuzzes [`Codec::decode`] with compression off, on, and on with a small limit. Checked: a
/// compressed envelope claiming more than a codec's limit is refused as `TooLarge` (before
/// any buffer is allocated: under libFuzzer an allocation of the claimed size would trip
/// `-malloc_limit_mb`); a node with compression off refuses compressed envelopes; plain
/// envelopes decode the same whatever the compression setting; the codecs agree whenever
/// none hits its limit; and whatever decodes re-encodes, with each codec, to bytes that
/// decode to the same envelope.
pub fn envelope(data: &[u8]) -> EnvelopeSummary {
    let off = Codec::default();
    let on = Codec::compressed(64);
    let small = Codec::compressed(16).with_max_decompressed(ENVELOPE_SMALL_LIMIT);
    let summary = EnvelopeSummary {
        plain: off.decode(data),
        compressed: on.decode(data),
        small_limit: small.decode(data),
    };
    let claimed = match data {
        [MARKER_LZ4, a, b, c, d, ..] => Some(u32::from_le_bytes([*a, *b, *c, *d]) as usize),
        _ => None,
    };
    if data.first() == Some(&MARKER_LZ4) {
        assert!(
            matches!(summary.plain, Err(EnvelopeError::CompressionMismatch)),
            "compression off accepted a compressed envelope: {:?}",
            summary.plain
        );
    }
    for (codec, result) in [(on, &summary.compressed), (small, &summary.small_limit)] {
        if let Some(claimed) = claimed {
            let over = claimed > codec.max_decompressed;
            let refused = matches!(result, Err(EnvelopeError::TooLarge { .. }));
            assert_eq!(
                over, refused,
                "claimed {claimed}, limit {}",
                codec.max_decompressed
            );
        }
        if data.first() == Some(&MARKER_PLAIN) {
            assert_eq!(
                result.as_ref().ok(),
                summary.plain.as_ref().ok(),
                "a plain envelope decodes differently with compression on"
            );
        }
    }
    if !matches!(summary.small_limit, Err(EnvelopeError::TooLarge { .. })) {
        assert_eq!(
            summary.small_limit.as_ref().ok(),
            summary.compressed.as_ref().ok(),
            "the limit changed an envelope within it"
        );
    }
    for decoded in [&summary.plain, &summary.compressed, &summary.small_limit] {
        let Ok(envelope) = decoded else { continue };
        for codec in [off, on, small] {
            let encoded = codec.encode(envelope);
            let Ok(encoded) = encoded else {
                panic!("{envelope:?} did not re-encode: {encoded:?}");
            };
            match codec.decode(&encoded) {
                Ok(again) => assert_eq!(&again, envelope, "re-encoding changed the envelope"),
                Err(e) => panic!("{envelope:?} re-encoded to undecodable bytes: {e}"),
            }
        }
    }
    summary
}

/// A small deterministic generator (xorshift64*), so every run of a bounded test sees the
/// same corpus. Seed it with any non-zero value.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True once in `one_in` draws, on average.
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

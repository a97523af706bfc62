//! RFC 6455 framing: an incremental, zero-copy decoder and frame encoders.
//!
//! The decoder works on a caller-owned `&mut [u8]` (a connection's read buffer or a stack
//! buffer) and unmasks payloads in place, so a complete frame is handed to the caller as a
//! borrowed slice without any copy. Only fragmented messages are assembled in a buffer the
//! decoder owns, allocated when the first fragment arrives and released when the message
//! completes, so an idle connection holds no buffer at all.
//!
//! Encoding is split in two: [`encode_header`] writes the 2–14 byte frame header, and the
//! helpers in [`crate::frame`] build a whole server → client frame (header + JSON) into one
//! [`bytes::Bytes`] that is shared, by reference count, by every recipient. The encoders
//! are defined beside permessage-deflate's, a layer below this decoder, and re-exported here.

use base64::Engine as _;
use sha1::{Digest, Sha1};

pub use crate::wire::{
    apply_mask, build_frame, close_frame, encode_frame, encode_header, server_frame, OpCode,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};

/// The GUID that RFC 6455 §1.3 appends to `Sec-WebSocket-Key`.
const HANDSHAKE_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes the `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(HANDSHAKE_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Which end of the connection the decoder sits on.
///
/// A server requires every incoming frame to be masked; a client requires none to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames a client sent (they must be masked).
    Server,
    /// Decoding frames a server sent (they must not be masked).
    Client,
}

/// A violation of RFC 6455 by the peer. The connection must be closed with
/// [`ProtocolError::close_code`]; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A reserved bit was set that no negotiated extension defines (RSV1 is permessage-deflate's
    /// "compressed" bit, allowed on the first frame of a data message once it is negotiated).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A compressed message was not valid DEFLATE data.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// An opcode RFC 6455 leaves reserved.
    #[error("unknown opcode {0:#x}")]
    UnknownOpCode(u8),
    /// A control frame had FIN unset.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame carried more than 125 bytes.
    #[error("control frame payload of {0} bytes (max 125)")]
    ControlTooLong(u64),
    /// A client frame arrived unmasked (server role) or a server frame masked (client role).
    #[error("frame masking does not match the peer's role")]
    BadMask,
    /// The 64-bit length had its most significant bit set.
    #[error("invalid 64-bit payload length")]
    BadLength,
    /// The message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size announced (or reached so far) by the peer.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A text message (or close reason) was not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A continuation frame arrived with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text/binary frame arrived while a fragmented message was in progress.
    #[error("new message started before the fragmented one finished")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload or a code that may not be sent.
    #[error("invalid close frame")]
    InvalidClose,
}

impl ProtocolError {
    /// The close code to send the peer for this error: 1009 for an oversized message, 1007
    /// for invalid UTF-8 or compressed data, 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::MessageTooLarge { .. } => 1009,
            Self::InvalidUtf8 | Self::InvalidCompressedData => 1007,
            _ => 1002,
        }
    }
}

/// A parsed close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code.
    pub code: u16,
    /// The reason (valid UTF-8, possibly empty).
    pub reason: &'a str,
}

/// A complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A complete text message.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping with its application data.
    Ping(&'a [u8]),
    /// A pong with its application data.
    Pong(&'a [u8]),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame<'a>>),
}

/// What [`Decoder::decode`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete message and the number of bytes of the buffer it used.
    Message(Message<'a>, usize),
    /// A fragment of a larger message was taken in; skip this many bytes and call again.
    Fragment(usize),
    /// The buffer holds only part of a frame. `needed` is the total frame size in bytes when
    /// the header is complete (so the caller can reserve room), or `None` when even the header
    /// is still incomplete.
    Incomplete {
        /// Total size of the frame at the front of the buffer, when known.
        needed: Option<usize>,
    },
}

/// Validates a close code as one a peer may send (RFC 6455 §7.4).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999)
}

/// An incremental frame decoder for one connection.
///
/// Holds only the state of a fragmented message in progress; everything else lives in the
/// caller's buffer.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    /// The fragmented message being assembled (boxed: most connections never have one, and
    /// every idle connection holds a decoder).
    fragments: Option<Box<Fragments>>,
    /// A fragmented or compressed message completed on the previous call; its buffer is
    /// released now.
    completed: bool,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
}

#[derive(Debug)]
struct Fragments {
    text: bool,
    /// The message is compressed (its UTF-8 is checked once inflated).
    compressed: bool,
    buf: Vec<u8>,
    /// For text: how many bytes at the front of `buf` are known to be valid UTF-8 ending on
    /// a character boundary.
    valid: usize,
}

impl Fragments {
    /// Checks a text message's UTF-8 as its fragments arrive, so that invalid text fails the
    /// connection at the fragment that makes it invalid, not only at the last one (RFC 6455
    /// §8.1 "fail fast"; Autobahn 6.4.1–6.4.2). A character cut between two fragments waits
    /// for the next. Costs one extra pass over the text at most, besides the final check.
    fn check_utf8(&mut self) -> Result<(), ProtocolError> {
        if !self.text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.buf[self.valid..]) {
            Ok(_) => self.valid = self.buf.len(),
            // Only the end is an unfinished character: valid so far.
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(ProtocolError::InvalidUtf8),
        }
        Ok(())
    }
}

impl Decoder {
    /// Creates a decoder for `role` that refuses messages larger than `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            fragments: None,
            completed: false,
            deflate: false,
        }
    }

    /// Accepts messages compressed with permessage-deflate (RSV1 on their first frame), as
    /// negotiated at the upgrade. The peer must compress each message on its own (no context
    /// takeover, which crosswire always negotiates): every message is inflated by a fresh
    /// stream, to at most the maximum message size.
    pub fn with_deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// The configured maximum message size.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether a fragmented message is in progress.
    pub fn in_fragmented_message(&self) -> bool {
        self.fragments.is_some() && !self.completed
    }

    /// Decodes the frame at the front of `buf`, unmasking its payload in place.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        if self.completed {
            self.completed = false;
            self.fragments = None;
        }
        let Some(head) = FrameHead::parse(buf, self.role, self.deflate)? else {
            return Ok(Decoded::Incomplete { needed: None });
        };
        self.check(&head)?;
        // `len` fits in usize: `check` bounded it by max_message or 125.
        let total = head.header + head.len as usize;
        if buf.len() < total {
            return Ok(Decoded::Incomplete {
                needed: Some(total),
            });
        }
        let payload = &mut buf[head.header..total];
        if let Some(mask) = head.mask {
            apply_mask(payload, mask);
        }
        self.message(&head, payload, total)
    }

    /// Checks a frame's header against the protocol and the state of the message being
    /// assembled: control frames whole and short, data frames within the size limit and in
    /// order.
    fn check(&self, head: &FrameHead) -> Result<(), ProtocolError> {
        if head.opcode.is_control() {
            if !head.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if head.len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong(head.len));
            }
            return Ok(());
        }
        if head.rsv1 && head.opcode == OpCode::Continuation {
            return Err(ProtocolError::ReservedBits);
        }
        let so_far = self.fragments.as_ref().map_or(0, |f| f.buf.len() as u64);
        if so_far.saturating_add(head.len) > self.max_message as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size: so_far.saturating_add(head.len),
                max: self.max_message,
            });
        }
        match (head.opcode, self.fragments.is_some()) {
            (OpCode::Continuation, false) => Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => Err(ProtocolError::ExpectedContinuation),
            _ => Ok(()),
        }
    }

    /// What an unmasked frame payload makes: a control message, a whole data message, or a
    /// fragment added to the message being assembled.
    fn message<'a>(
        &'a mut self,
        head: &FrameHead,
        payload: &'a [u8],
        total: usize,
    ) -> Result<Decoded<'a>, ProtocolError> {
        let message = match head.opcode {
            OpCode::Ping => Message::Ping(payload),
            OpCode::Pong => Message::Pong(payload),
            OpCode::Close => Message::Close(parse_close(payload)?),
            OpCode::Text | OpCode::Binary if head.fin && head.rsv1 => {
                let inflated = Fragments {
                    text: head.opcode == OpCode::Text,
                    compressed: false,
                    buf: inflate(payload, self.max_message)?,
                    valid: 0,
                };
                self.completed = true;
                return Ok(Decoded::Message(
                    self.fragments.insert(Box::new(inflated)).message()?,
                    total,
                ));
            }
            OpCode::Text if head.fin => Message::Text(text(payload)?),
            OpCode::Binary if head.fin => Message::Binary(payload),
            OpCode::Text | OpCode::Binary => {
                let mut assembled = Vec::with_capacity(payload.len().max(256));
                assembled.extend_from_slice(payload);
                let mut fragments = Fragments {
                    text: head.opcode == OpCode::Text,
                    compressed: head.rsv1,
                    buf: assembled,
                    valid: 0,
                };
                fragments.check_utf8()?;
                self.fragments = Some(Box::new(fragments));
                return Ok(Decoded::Fragment(total));
            }
            OpCode::Continuation => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                fragments.buf.extend_from_slice(payload);
                if !head.fin {
                    fragments.check_utf8()?;
                    return Ok(Decoded::Fragment(total));
                }
                self.completed = true;
                if fragments.compressed {
                    fragments.buf = inflate(&fragments.buf, self.max_message)?;
                }
                fragments.message()?
            }
        };
        Ok(Decoded::Message(message, total))
    }
}

impl Fragments {
    /// The complete message held.
    fn message(&self) -> Result<Message<'_>, ProtocolError> {
        Ok(if self.text {
            Message::Text(text(&self.buf)?)
        } else {
            Message::Binary(&self.buf)
        })
    }
}

/// Inflates a compressed message to at most `max` bytes.
fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
    crate::deflate::inflate(data, max).map_err(|e| match e {
        crate::deflate::InflateError::Invalid => ProtocolError::InvalidCompressedData,
        crate::deflate::InflateError::TooLarge => ProtocolError::MessageTooLarge {
            size: max as u64 + 1,
            max,
        },
    })
}

fn text(data: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)
}

/// A frame's header: flags, opcode, payload length, header size and masking key.
struct FrameHead {
    fin: bool,
    /// permessage-deflate's "compressed" bit.
    rsv1: bool,
    opcode: OpCode,
    len: u64,
    /// Header size in bytes, masking key included.
    header: usize,
    mask: Option<[u8; 4]>,
}

impl FrameHead {
    /// Parses the header at the start of `buf`; `None` when `buf` does not hold all of it.
    /// RSV1 is accepted on data frames when `deflate` was negotiated (the decoder then checks
    /// it is on a message's first frame only).
    fn parse(buf: &[u8], role: Role, deflate: bool) -> Result<Option<Self>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::UnknownOpCode(b0 & 0x0F))?;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && (!deflate || opcode.is_control())) {
            return Err(ProtocolError::ReservedBits);
        }
        let masked = b1 & 0x80 != 0;
        if masked != (role == Role::Server) {
            return Err(ProtocolError::BadMask);
        }
        let Some((len, mut header)) = Self::length(buf, b1 & 0x7F)? else {
            return Ok(None);
        };
        let mask = if masked {
            let Some(key) = buf.get(header..header + 4) else {
                return Ok(None);
            };
            header += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some(Self {
            fin: b0 & 0x80 != 0,
            rsv1,
            opcode,
            len,
            header,
            mask,
        }))
    }

    /// The payload length and the header size before the masking key, from the 7-bit
    /// length field `short` and the extended length that may follow it.
    fn length(buf: &[u8], short: u8) -> Result<Option<(u64, usize)>, ProtocolError> {
        match short {
            126 => Ok(buf
                .get(2..4)
                .map(|b| (u64::from(u16::from_be_bytes([b[0], b[1]])), 4))),
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(b);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::BadLength);
                }
                Ok(Some((len, 10)))
            }
            n => Ok(Some((u64::from(n), 2))),
        }
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::InvalidClose),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::InvalidClose);
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let n = encode_header(&mut header, fin, opcode, payload.len(), Some(mask));
        let mut v = header[..n].to_vec();
        let start = v.len();
        v.extend_from_slice(payload);
        apply_mask(&mut v[start..], mask);
        v
    }

    #[test]
    fn rfc_accept_key() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut buf = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut d = Decoder::new(Role::Server, 1024);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Message(Message::Text("Hello"), 11)
        );
    }

    #[test]
    fn every_split_point_is_incomplete_until_whole() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let frame = masked(OpCode::Text, true, &payload);
            for cut in [0, 1, 2, 3, 5, 9, 13, frame.len() - 1] {
                if cut >= frame.len() {
                    continue;
                }
                let mut part = frame[..cut].to_vec();
                let mut d = Decoder::new(Role::Server, 1 << 20);
                match d.decode(&mut part).unwrap() {
                    Decoded::Incomplete { needed } => {
                        if let Some(n) = needed {
                            assert_eq!(n, frame.len());
                        }
                    }
                    other => panic!("len {len} cut {cut}: {other:?}"),
                }
            }
            let mut whole = frame.clone();
            let mut d = Decoder::new(Role::Server, 1 << 20);
            match d.decode(&mut whole).unwrap() {
                Decoded::Message(Message::Text(t), used) => {
                    assert_eq!(t.as_bytes(), &payload[..]);
                    assert_eq!(used, frame.len());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn fragmented_with_interleaved_ping() {
        let mut buf = masked(OpCode::Text, false, b"Hel");
        buf.extend(masked(OpCode::Ping, true, b"p"));
        buf.extend(masked(OpCode::Continuation, false, b"l"));
        buf.extend(masked(OpCode::Continuation, true, b"o"));
        let mut d = Decoder::new(Role::Server, 1024);
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < buf.len() {
            match d.decode(&mut buf[pos..]).unwrap() {
                Decoded::Fragment(n) => pos += n,
                Decoded::Message(m, n) => {
                    got.push(format!("{m:?}"));
                    pos += n;
                }
                Decoded::Incomplete { .. } => panic!("incomplete"),
            }
        }
        assert_eq!(
            got,
            vec!["Ping([112])".to_string(), "Text(\"Hello\")".to_string()]
        );
        assert!(!d.in_fragmented_message());
    }

    /// Feeds `frames` one at a time; the outcome of each (`Ok(None)` for a fragment taken in).
    fn decode_each(frames: &[Vec<u8>]) -> Vec<Result<Option<String>, ProtocolError>> {
        let mut d = Decoder::new(Role::Server, 1024);
        frames
            .iter()
            .map(|frame| {
                let mut frame = frame.clone();
                match d.decode(&mut frame) {
                    Ok(Decoded::Fragment(_)) => Ok(None),
                    Ok(Decoded::Message(m, _)) => Ok(Some(format!("{m:?}"))),
                    Ok(Decoded::Incomplete { .. }) => panic!("incomplete"),
                    Err(e) => Err(e),
                }
            })
            .collect()
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_makes_it_invalid() {
        // Autobahn 6.4.1: valid first fragment, invalid second one (U+110000 and more),
        // never-sent third: the error comes with the second, not at the end.
        let got = decode_each(&[
            masked(OpCode::Text, false, "κόσμε".as_bytes()),
            masked(OpCode::Continuation, false, &[0xf4, 0x90, 0x80, 0x80]),
        ]);
        assert_eq!(got, vec![Ok(None), Err(ProtocolError::InvalidUtf8)]);
        // 6.4.2: the fragment ends right on the octet that makes the text invalid.
        let got = decode_each(&[
            masked(OpCode::Text, false, b"ab"),
            masked(OpCode::Continuation, false, &[0xf4, 0x90]),
        ]);
        assert_eq!(got, vec![Ok(None), Err(ProtocolError::InvalidUtf8)]);
        // Invalid already in the first fragment.
        let got = decode_each(&[masked(OpCode::Text, false, &[b'a', 0xff])]);
        assert_eq!(got, vec![Err(ProtocolError::InvalidUtf8)]);
        // A character cut between fragments (even byte by byte) is fine.
        let euro = "€".as_bytes();
        let got = decode_each(&[
            masked(OpCode::Text, false, &[b'x', euro[0]]),
            masked(OpCode::Continuation, false, &euro[1..2]),
            masked(OpCode::Continuation, true, &euro[2..]),
        ]);
        assert_eq!(
            got,
            vec![Ok(None), Ok(None), Ok(Some("Text(\"x€\")".into()))]
        );
        // ... but a message that ends inside a character is not.
        let got = decode_each(&[
            masked(OpCode::Text, false, b"x"),
            masked(OpCode::Continuation, true, &euro[..2]),
        ]);
        assert_eq!(got, vec![Ok(None), Err(ProtocolError::InvalidUtf8)]);
        // Binary fragments are not text.
        let got = decode_each(&[
            masked(OpCode::Binary, false, &[0xff]),
            masked(OpCode::Continuation, true, &[0xfe]),
        ]);
        assert_eq!(got, vec![Ok(None), Ok(Some("Binary([255, 254])".into()))]);
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (vec![0xC1, 0x80, 0, 0, 0, 0], ProtocolError::ReservedBits),
            (
                vec![0x83, 0x80, 0, 0, 0, 0],
                ProtocolError::UnknownOpCode(3),
            ),
            (vec![0x81, 0x00], ProtocolError::BadMask),
            (
                masked(OpCode::Ping, false, b""),
                ProtocolError::FragmentedControl,
            ),
            (
                masked(OpCode::Ping, true, &[0; 126]),
                ProtocolError::ControlTooLong(126),
            ),
            (
                masked(OpCode::Continuation, true, b"x"),
                ProtocolError::UnexpectedContinuation,
            ),
            (
                masked(OpCode::Text, true, &[0xff, 0xfe]),
                ProtocolError::InvalidUtf8,
            ),
            (
                masked(OpCode::Close, true, &[3]),
                ProtocolError::InvalidClose,
            ),
            (
                masked(OpCode::Close, true, &1005u16.to_be_bytes()),
                ProtocolError::InvalidClose,
            ),
            (
                masked(OpCode::Binary, true, &[0; 2000]),
                ProtocolError::MessageTooLarge {
                    size: 2000,
                    max: 1024,
                },
            ),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ProtocolError::BadLength,
            ),
        ];
        for (mut frame, want) in cases {
            let mut d = Decoder::new(Role::Server, 1024);
            assert_eq!(d.decode(&mut frame).unwrap_err(), want);
        }
        // A new data frame in the middle of a fragmented message.
        let mut d = Decoder::new(Role::Server, 1024);
        let mut a = masked(OpCode::Text, false, b"a");
        assert!(matches!(d.decode(&mut a), Ok(Decoded::Fragment(_))));
        let mut b = masked(OpCode::Text, true, b"b");
        assert_eq!(
            d.decode(&mut b).unwrap_err(),
            ProtocolError::ExpectedContinuation
        );
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        // Only the header of a 4 MiB frame: refused before any payload is buffered.
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut header, true, OpCode::Text, 4 << 20, Some([1, 2, 3, 4]));
        let mut d = Decoder::new(Role::Server, 1 << 20);
        let err = d.decode(&mut header[..n]).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        // Fragments add up against the limit too.
        let mut d = Decoder::new(Role::Server, 10);
        let mut a = masked(OpCode::Binary, false, &[0; 6]);
        assert!(matches!(d.decode(&mut a), Ok(Decoded::Fragment(_))));
        let mut b = masked(OpCode::Continuation, true, &[0; 6]);
        assert!(matches!(
            d.decode(&mut b),
            Err(ProtocolError::MessageTooLarge { size: 12, max: 10 })
        ));
    }

    #[test]
    fn build_frame_places_header_before_payload() {
        for len in [0usize, 10, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let frame = build_frame::<()>(OpCode::Text, len, |b| {
                b.extend_from_slice(&payload);
                Ok(())
            })
            .unwrap();
            let mut d = Decoder::new(Role::Client, 1 << 20);
            let mut v = frame.to_vec();
            match d.decode(&mut v).unwrap() {
                Decoded::Message(Message::Text(t), used) => {
                    assert_eq!(t.len(), len);
                    assert_eq!(used, frame.len());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn close_frame_truncates_at_char_boundary() {
        let reason = "é".repeat(100);
        let frame = close_frame(4012, &reason);
        let mut v = frame.to_vec();
        let mut d = Decoder::new(Role::Client, 1024);
        match d.decode(&mut v).unwrap() {
            Decoded::Message(Message::Close(Some(c)), _) => {
                assert_eq!(c.code, 4012);
                assert!(c.reason.len() <= 123);
            }
            other => panic!("{other:?}"),
        }
    }
}

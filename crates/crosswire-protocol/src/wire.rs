//! RFC 6455 frame encoding: opcodes, headers, masks and whole frames. The decoder
//! ([`crate::ws`], which re-exports all of this) and permessage-deflate
//! ([`crate::deflate`]) both build on it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest header a frame can have: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// A continuation of a fragmented message.
    Continuation = 0x0,
    /// A UTF-8 text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of a frame header's low four bits; `None` for a reserved one.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// XORs `payload` with the 4-byte `mask`, word at a time.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let mask64 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ mask64;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Writes a frame header into `out` and returns its length.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if len < 126 {
        out[1] = mask_bit | len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    n
}

/// Appends a whole frame (header + payload, masked when `mask` is given) to `out`.
pub fn encode_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, payload.len(), mask);
    out.reserve(n + payload.len());
    out.put_slice(&header[..n]);
    let start = out.len();
    out.put_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m);
    }
}

/// A complete unmasked (server → client) frame as shared bytes.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode_frame(&mut out, opcode, payload, None);
    out.freeze()
}

/// A complete unmasked close frame; `code` must be valid to send (see [`crate::ws::is_valid_close_code`]),
/// the reason is cut to fit the 125-byte control limit at a character boundary.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len().min(123));
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    server_frame(OpCode::Close, &payload)
}

/// Builds a frame by reserving header room in front of a payload written by `write`, then
/// placing the header right before it: the payload is written once and never moved.
///
/// `write` must append the payload to the buffer it is given.
pub fn build_frame<E>(
    opcode: OpCode,
    capacity_hint: usize,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    const RESERVED: usize = 10;
    let mut buf = BytesMut::with_capacity(RESERVED + capacity_hint);
    buf.put_bytes(0, RESERVED);
    write(&mut buf)?;
    let len = buf.len() - RESERVED;
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, len, None);
    let start = RESERVED - n;
    buf[start..RESERVED].copy_from_slice(&header[..n]);
    // `advance`, not `split_to`: the buffer stays one plain allocation (no shared header
    // to allocate and free per frame).
    buf.advance(start);
    Ok(buf.freeze())
}

//! A small RESP2 reply decoder for the subscribe connection.
//!
//! The subscribe connection reads its socket itself (see the crate docs for why), so it needs
//! to cut replies out of a byte buffer. Bulk strings are sliced out of the buffer without a
//! copy: a received payload is a view of the bytes read from the socket.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Largest bulk string accepted (Redis's own limit).
const MAX_BULK: usize = 512 << 20;
/// Largest array accepted.
const MAX_ARRAY: usize = 1 << 20;
/// Deepest array nesting accepted (pub/sub replies are one level deep).
const MAX_DEPTH: usize = 8;
/// Longest line accepted (a simple string, an error or a length), CRLF included: Redis's
/// status and error replies are short.
const MAX_LINE: usize = 64 << 10;
/// Largest whole reply accepted: a message carrying a bulk string of the largest size, with
/// room for the channel name and the framing. Without it a peer could make the read buffer
/// grow without end while the decoder waits for a reply that never completes: an array of
/// a million 512 MiB bulk strings, or a line without an end.
const MAX_REPLY: usize = MAX_BULK + (1 << 20);

/// The limits one reply is decoded within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest bulk string.
    pub(crate) bulk: usize,
    /// Most items in one array.
    pub(crate) array: usize,
    /// Deepest array nesting.
    pub(crate) depth: usize,
    /// Longest line, CRLF included.
    pub(crate) line: usize,
    /// Largest reply, in bytes of the wire form: the decoder never waits for more.
    pub(crate) reply: usize,
}

impl Limits {
    /// The limits of the subscribe connection.
    pub(crate) const REDIS: Self = Self {
        bulk: MAX_BULK,
        array: MAX_ARRAY,
        depth: MAX_DEPTH,
        line: MAX_LINE,
        reply: MAX_REPLY,
    };
}

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-text`
    Error(Bytes),
    /// `:n`
    Integer(i64),
    /// `$n` … (`None` for the null bulk string)
    Bulk(Option<Bytes>),
    /// `*n` … (`None` for the null array)
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The bytes of a simple or bulk string.
    pub(crate) fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Simple(b) | Self::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// The bytes are not RESP2; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RespError {
    #[error("invalid RESP type byte {0:#04x}")]
    Type(u8),
    #[error("invalid RESP length or integer")]
    Number,
    #[error("RESP reply too large: a bulk string, array, line or whole reply past its limit")]
    TooLarge,
    #[error("RESP arrays nested too deep")]
    TooDeep,
    #[error("RESP bulk string not terminated by CRLF")]
    Terminator,
}

/// A frame located in the buffer, by ranges.
enum Raw {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    Array(Option<Vec<Raw>>),
}

/// Takes one complete frame off the front of `buf`, or `None` when more bytes are needed.
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, RespError> {
    decode_with(buf, &Limits::REDIS)
}

/// [`decode`] within other limits. `None` is only ever returned while `buf` holds at most
/// `limits.reply` bytes of the reply: past that the reply is refused as too large.
pub(crate) fn decode_with(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, RespError> {
    let Some((raw, end)) = parse(buf, 0, 0, limits)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(end).freeze();
    Ok(Some(build(raw, &bytes)))
}

fn build(raw: Raw, bytes: &Bytes) -> Frame {
    match raw {
        Raw::Simple(r) => Frame::Simple(bytes.slice(r)),
        Raw::Error(r) => Frame::Error(bytes.slice(r)),
        Raw::Integer(n) => Frame::Integer(n),
        Raw::Bulk(r) => Frame::Bulk(r.map(|r| bytes.slice(r))),
        Raw::Array(items) => {
            Frame::Array(items.map(|v| v.into_iter().map(|i| build(i, bytes)).collect()))
        }
    }
}

/// The line starting at `pos` (without CRLF) and the position after its CRLF; `None` when
/// its end has not arrived yet, an error when it is (or would be) longer than the limits.
fn line(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(Range<usize>, usize)>, RespError> {
    let rest = buf.get(pos..).unwrap_or_default();
    // The line, LF included, must fit in the line limit and in what is left of the reply.
    let room = limits.line.min(limits.reply.saturating_sub(pos));
    let Some(lf) = rest.iter().take(room).position(|&b| b == b'\n') else {
        return if rest.len() >= room {
            Err(RespError::TooLarge)
        } else {
            Ok(None)
        };
    };
    // A line ends with CRLF; a bare LF is tolerated as the end.
    let end = if lf > 0 && rest[lf - 1] == b'\r' {
        pos + lf - 1
    } else {
        pos + lf
    };
    Ok(Some((pos..end, pos + lf + 1)))
}

fn number(bytes: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError::Number)
}

fn parse(
    buf: &[u8],
    pos: usize,
    depth: usize,
    limits: &Limits,
) -> Result<Option<(Raw, usize)>, RespError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, pos + 1, limits)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Raw::Simple(text), next))),
        b'-' => Ok(Some((Raw::Error(text), next))),
        b':' => Ok(Some((Raw::Integer(number(&buf[text])?), next))),
        b'$' => {
            let len = number(&buf[text])?;
            if len < 0 {
                return Ok(Some((Raw::Bulk(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Number)?;
            if len > limits.bulk || next.saturating_add(len).saturating_add(2) > limits.reply {
                return Err(RespError::TooLarge);
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::Terminator);
            }
            Ok(Some((Raw::Bulk(Some(next..end)), end + 2)))
        }
        b'*' => {
            let count = number(&buf[text])?;
            if count < 0 {
                return Ok(Some((Raw::Array(None), next)));
            }
            let count = usize::try_from(count).map_err(|_| RespError::Number)?;
            if count > limits.array {
                return Err(RespError::TooLarge);
            }
            if depth >= limits.depth {
                return Err(RespError::TooDeep);
            }
            let mut items = Vec::with_capacity(count.min(16));
            let mut at = next;
            for _ in 0..count {
                let Some((item, after)) = parse(buf, at, depth + 1, limits)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            Ok(Some((Raw::Array(Some(items)), at)))
        }
        other => Err(RespError::Type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn decodes_pubsub_replies_in_any_split() {
        let wire: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n\
*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n\
*2\r\n$4\r\npong\r\n$0\r\n\r\n+PONG\r\n-ERR nope\r\n$-1\r\n*-1\r\n";
        let expected = vec![
            Frame::Array(Some(vec![bulk("subscribe"), bulk("ch"), Frame::Integer(1)])),
            Frame::Array(Some(vec![bulk("message"), bulk("ch"), bulk("he\r\no")])),
            Frame::Array(Some(vec![bulk("pong"), bulk("")])),
            Frame::Simple(Bytes::from_static(b"PONG")),
            Frame::Error(Bytes::from_static(b"ERR nope")),
            Frame::Bulk(None),
            Frame::Array(None),
        ];
        // Feed the bytes in every chunk size: the decoder must wait for whole frames.
        for chunk in 1..wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = decode(&mut buf).unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, expected, "chunk size {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn endless_lines_and_replies_are_refused_not_buffered() {
        // A line with no end: waited for while it could still end within the line limit
        // (its LF included), then refused, so the read buffer cannot grow without end.
        let mut buf = BytesMut::from(&b"+"[..]);
        buf.extend_from_slice(&vec![b'a'; MAX_LINE - 1]);
        assert_eq!(decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"a");
        assert_eq!(decode(&mut buf), Err(RespError::TooLarge));
        // A reply whose claimed lengths add up past the reply limit is refused from the
        // header that crosses it, before its bytes arrive.
        let limits = Limits {
            reply: 32,
            ..Limits::REDIS
        };
        let mut buf = BytesMut::from(&b"*2\r\n$10\r\n0123456789\r\n$10\r\n"[..]);
        assert_eq!(decode_with(&mut buf, &limits), Err(RespError::TooLarge));
        let mut fits = BytesMut::from(&b"*2\r\n$10\r\n0123456789\r\n$3\r\n"[..]);
        assert_eq!(decode_with(&mut fits, &limits), Ok(None));
        fits.extend_from_slice(b"abc\r\n");
        assert!(matches!(
            decode_with(&mut fits, &limits),
            Ok(Some(Frame::Array(_)))
        ));
        // With Redis's limits: a bulk string of the largest size still fits in a reply.
        let mut largest = BytesMut::from(
            format!("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${MAX_BULK}\r\n").as_bytes(),
        );
        assert_eq!(decode(&mut largest), Ok(None));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        // 100,000 nested one-item arrays: refused at the limit, long before the stack is at
        // risk (the parser recurses once per level).
        let mut buf = BytesMut::from("*1\r\n".repeat(100_000).as_bytes());
        assert_eq!(decode(&mut buf), Err(RespError::TooDeep));
        // Nesting up to the limit is fine.
        let mut ok = BytesMut::from(format!("{}:1\r\n", "*1\r\n".repeat(MAX_DEPTH)).as_bytes());
        assert!(matches!(decode(&mut ok), Ok(Some(Frame::Array(_)))));
        assert!(ok.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcXY",
            b"$999999999999\r\n",
            b"*99999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(decode(&mut buf).is_err(), "{bad:?}");
        }
    }
}

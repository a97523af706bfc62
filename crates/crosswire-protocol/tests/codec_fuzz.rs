//! Property tests of the RFC 6455 decoder: random message streams, fragmented at random with
//! interleaved control frames and cut into random read chunks, must decode to exactly the
//! messages sent; random and mutated input must never panic or read out of bounds.

use crosswire_protocol::ws::{
    apply_mask, encode_header, Decoded, Decoder, Message, OpCode, ProtocolError, Role,
    MAX_HEADER_LEN,
};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close,
}

fn frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, fin, opcode, payload.len(), Some(mask));
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        4 => prop_oneof![
            "[a-zA-Z0-9 éß€😀{}\\[\\]\":,]{0,300}".prop_map(Msg::Text),
            (0usize..70_000).prop_map(|n| Msg::Text("x".repeat(n))),
        ],
        2 => prop::collection::vec(any::<u8>(), 0..2000).prop_map(Msg::Binary),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Pong),
    ]
}

/// Encodes `msgs`, splitting data messages into `pieces` fragments with a ping between.
fn encode_stream(msgs: &[Msg], pieces: usize, mask: [u8; 4]) -> (Vec<u8>, Vec<Msg>) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for m in msgs {
        match m {
            Msg::Text(_) | Msg::Binary(_) => {
                let (opcode, data) = match m {
                    Msg::Text(t) => (OpCode::Text, t.as_bytes().to_vec()),
                    Msg::Binary(b) => (OpCode::Binary, b.clone()),
                    _ => unreachable!(),
                };
                let k = pieces.clamp(1, data.len().max(1));
                let chunk = data.len().div_ceil(k).max(1);
                let parts: Vec<&[u8]> = if data.is_empty() {
                    vec![&[][..]]
                } else {
                    data.chunks(chunk).collect()
                };
                for (i, part) in parts.iter().enumerate() {
                    let op = if i == 0 { opcode } else { OpCode::Continuation };
                    frame(&mut out, i + 1 == parts.len(), op, part, mask);
                    if i + 1 < parts.len() {
                        frame(&mut out, true, OpCode::Ping, b"mid", mask);
                        expected.push(Msg::Ping(b"mid".to_vec()));
                    }
                }
                expected.push(m.clone());
            }
            Msg::Ping(p) => {
                frame(&mut out, true, OpCode::Ping, p, mask);
                expected.push(m.clone());
            }
            Msg::Pong(p) => {
                frame(&mut out, true, OpCode::Pong, p, mask);
                expected.push(m.clone());
            }
            Msg::Close => {
                frame(&mut out, true, OpCode::Close, &1000u16.to_be_bytes(), mask);
                expected.push(Msg::Close);
            }
        }
    }
    (out, expected)
}

/// Feeds `stream` to a decoder in chunks, the way the server's connection does: complete
/// frames are decoded from the chunk, a partial one is carried in a pending buffer.
/// Returns the messages and how many bytes were left undecoded at the end.
fn drive(stream: &[u8], cuts: &[usize], max: usize) -> Result<(Vec<Msg>, usize), ProtocolError> {
    let mut decoder = Decoder::new(Role::Server, max);
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut start = 0;
    for end in bounds {
        if end < start {
            continue;
        }
        pending.extend_from_slice(&stream[start..end]);
        start = end;
        let mut pos = 0;
        loop {
            let available = pending.len() - pos;
            match decoder.decode(&mut pending[pos..])? {
                Decoded::Message(m, used) => {
                    assert!(used <= available);
                    got.push(match m {
                        Message::Text(t) => Msg::Text(t.to_string()),
                        Message::Binary(b) => Msg::Binary(b.to_vec()),
                        Message::Ping(p) => Msg::Ping(p.to_vec()),
                        Message::Pong(p) => Msg::Pong(p.to_vec()),
                        Message::Close(_) => Msg::Close,
                    });
                    pos += used;
                }
                Decoded::Fragment(used) => {
                    assert!(used <= available);
                    pos += used;
                }
                Decoded::Incomplete { needed } => {
                    if let Some(n) = needed {
                        assert!(n > available);
                    }
                    break;
                }
            }
        }
        pending.drain(..pos);
    }
    Ok((got, pending.len()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_decode_exactly(
        msgs in prop::collection::vec(msg_strategy(), 1..12),
        pieces in 1usize..5,
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        mask in any::<[u8; 4]>(),
    ) {
        let (stream, expected) = encode_stream(&msgs, pieces, mask);
        let (got, left) = drive(&stream, &cuts, 1 << 20).expect("valid stream");
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096), role in any::<bool>()) {
        let mut buf = bytes.clone();
        let mut d = Decoder::new(if role { Role::Server } else { Role::Client }, 1 << 16);
        let mut pos = 0;
        while pos < buf.len() {
            match d.decode(&mut buf[pos..]) {
                Ok(Decoded::Message(_, used)) | Ok(Decoded::Fragment(used)) => {
                    prop_assert!(used > 0 && used <= bytes.len() - pos);
                    pos += used;
                }
                Ok(Decoded::Incomplete { .. }) | Err(_) => break,
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        msgs in prop::collection::vec(msg_strategy(), 1..4),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (mut stream, _) = encode_stream(&msgs, 2, [1, 2, 3, 4]);
        for (at, bits) in flips {
            let i = at % stream.len();
            stream[i] ^= bits;
        }
        // Any outcome but a panic or an out-of-bounds read is acceptable.
        let _ = drive(&stream, &cuts, 1 << 20);
    }
}

//! The `resp` fuzz target of `fuzz/` run as a bounded, deterministic test on stable: the same
//! per-input check (`crosswire_redis::fuzzing::resp`) over a fixed-seed pseudo-random corpus
//! of RESP2 streams and over hand-written hostile inputs, plus every input the
//! coverage-guided runs found (`docs/FUZZING.md`). The check panics when an invariant breaks;
//! the tests also assert what the hostile inputs must produce and that the corpus reaches
//! deep into the decoder.

use crosswire_protocol::fuzzing::Rng;
use crosswire_redis::fuzzing::{resp, RespOutcome};

/// One RESP2 reply, nested up to `depth` more levels.
fn reply(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => out.extend_from_slice(b"+OK\r\n"),
        1 => out.extend_from_slice(b"-ERR unknown command\r\n"),
        2 => out.extend_from_slice(format!(":{}\r\n", rng.next_u64() as i64).as_bytes()),
        3 => out.extend_from_slice(if rng.chance(2) {
            b"$-1\r\n"
        } else {
            b"*-1\r\n"
        }),
        4 | 5 => {
            let len = if rng.chance(10) {
                rng.below(300)
            } else {
                rng.below(12)
            };
            out.extend_from_slice(format!("${len}\r\n").as_bytes());
            // Payloads with CR, LF and CRLF inside: only the length counts.
            out.extend((0..len).map(|i| b"ab\r\n\r"[i % 5]));
            out.extend_from_slice(b"\r\n");
        }
        _ => {
            let n = rng.below(5);
            out.extend_from_slice(format!("*{n}\r\n").as_bytes());
            for _ in 0..n {
                reply(rng, depth - 1, out);
            }
        }
    }
}

/// Flips, inserts, deletes or truncates a few bytes, as a mutating fuzzer would.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(3) {
        if data.len() < 2 {
            data.push(rng.next_u64() as u8);
            continue;
        }
        let at = 1 + rng.below(data.len() - 1);
        match rng.below(5) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = b"*$:+-\r\n0123456789"[rng.below(17)],
            2 => data.insert(at, rng.next_u64() as u8),
            3 => {
                data.remove(at);
            }
            _ => data.truncate(at),
        }
    }
}

#[test]
fn resp_pseudo_random_corpus() {
    let mut rng = Rng(0x5eed_0005);
    let (mut replies, mut small_replies, mut errors) = (0, 0, std::collections::BTreeSet::new());
    for _ in 0..2000 {
        // Byte 0 is the read size of the fuzz target's input.
        let mut data = vec![rng.next_u64() as u8];
        for _ in 0..rng.below(6) {
            let depth = 1 + rng.below(4);
            reply(&mut rng, depth, &mut data);
        }
        if rng.chance(3) {
            mutate(&mut rng, &mut data);
        }
        let RespOutcome { redis, small } = resp(&data);
        replies += redis.replies;
        small_replies += small.replies;
        errors.extend(redis.error);
        errors.extend(small.error);
    }
    assert!(replies > 3000, "{replies} replies");
    assert!(
        small_replies > 1000,
        "{small_replies} replies within the small limits"
    );
    for message in [
        "invalid RESP type byte",
        "invalid RESP length or integer",
        "RESP reply too large",
        "RESP arrays nested too deep",
        "RESP bulk string not terminated by CRLF",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(message)),
            "no {message:?} in {errors:?}"
        );
    }
    // Pure noise, and noise made of RESP's own bytes.
    for _ in 0..3000 {
        let n = rng.below(64);
        let data: Vec<u8> = (0..n)
            .map(|_| {
                if rng.chance(2) {
                    b"*$:+-\r\n0123456789"[rng.below(17)]
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
        resp(&data);
    }
}

/// The outcome within Redis's limits of `stream`, read 64 bytes at a time.
fn redis(stream: &[u8]) -> (usize, Option<String>, usize) {
    let mut data = vec![63];
    data.extend_from_slice(stream);
    let s = resp(&data).redis;
    (s.replies, s.error, s.leftover)
}

fn refused(stream: &[u8], why: &str) {
    let (_, error, _) = redis(stream);
    assert!(
        error.as_deref().is_some_and(|e| e.contains(why)),
        "{:?}: {error:?}",
        String::from_utf8_lossy(&stream[..stream.len().min(40)])
    );
}

#[test]
fn resp_hostile_inputs() {
    // Deep nesting: refused at depth 8, without recursing 100,000 levels.
    refused("*1\r\n".repeat(100_000).as_bytes(), "nested too deep");
    let ok = format!("{}:1\r\n", "*1\r\n".repeat(8));
    assert_eq!(redis(ok.as_bytes()), (1, None, 0));
    // Huge claimed lengths: refused from the header, nothing reserved for them.
    for header in [
        "$9223372036854775807\r\n",
        "*9223372036854775807\r\n",
        "$536870913\r\n",
        "*1048577\r\n",
    ] {
        refused(header.as_bytes(), "too large");
    }
    refused(b"$99999999999999999999\r\n", "invalid RESP length");
    // A bulk string of Redis's largest size is waited for (and not allocated up front).
    assert_eq!(redis(b"$536870912\r\nabc"), (0, None, 15));
    // Negative lengths other than -1 are read as null, as Redis clients commonly do.
    assert_eq!(redis(b"$-9223372036854775808\r\n*-2\r\n"), (2, None, 0));
    // A line that never ends is refused once it passes 64 KiB, not buffered forever.
    let mut endless = b"+".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 70_000));
    refused(&endless, "too large");
    assert_eq!(redis(&endless[..1000]), (0, None, 1000));
    // The same through the small limits: a reply is refused once its claimed lengths add
    // up past 256 bytes, before those bytes arrive.
    let mut data = vec![255];
    data.extend_from_slice(b"*4\r\n$60\r\n");
    data.extend(std::iter::repeat_n(b'x', 60));
    data.extend_from_slice(b"\r\n$60\r\n");
    data.extend(std::iter::repeat_n(b'x', 60));
    data.extend_from_slice(b"\r\n$60\r\n");
    data.extend(std::iter::repeat_n(b'x', 60));
    data.extend_from_slice(b"\r\n$60\r\n");
    let outcome = resp(&data);
    assert_eq!((outcome.redis.replies, outcome.redis.error), (0, None));
    assert!(outcome.small.error.is_some_and(|e| e.contains("too large")));
    // A pub/sub message split anywhere decodes once whole; garbage after it is refused.
    let message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n?x\r\n";
    let (replies, error, _) = redis(message);
    assert_eq!(replies, 1);
    assert!(error.is_some_and(|e| e.contains("type byte")));
    // Found by the target (a bug in the check, not the decoder: how much of the stream was
    // read when an error showed depends on the reads, and was compared).
    let outcome = resp(&[10, 174, 10, 10]);
    assert!(outcome
        .redis
        .error
        .is_some_and(|e| e.contains("type byte 0xae")));
    // A bulk string whose terminator is wrong.
    refused(b"$3\r\nabcXY", "not terminated");
}

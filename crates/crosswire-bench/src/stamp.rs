//! Payload stamping: every message the load generator sends carries a sequence number and a
//! send timestamp inside a plain JSON string, so that a receiver can find them again with a
//! substring search instead of a full JSON parse.
//!
//! A stamped string looks like `cwb1:<seq>:<sent_us>;xxxx…` where `sent_us` is the number of
//! microseconds since [`now_us`]'s process-wide epoch and the `x` padding brings the JSON encoding
//! of the string (quotes included) up to the requested size. Because the stamp is a JSON string
//! made of characters that need no escaping, it survives any re-serialisation by the server
//! (re-ordering of object keys, whitespace changes) unchanged.
//!
//! The padding matters to permessage-deflate: `x` repeated ([`Padding::X`], the default)
//! compresses to almost nothing, so [`Padding::Words`] fills with English words picked
//! pseudo-randomly per message instead, which compresses about as well as prose.

use std::sync::OnceLock;
use std::time::Instant;

/// The marker that starts a stamp inside a frame.
pub const MARKER: &str = "cwb1:";

/// Sequence number and send time found in a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number assigned by the sender (starting at 0).
    pub seq: u64,
    /// Send time in microseconds since the process epoch (see [`now_us`]).
    pub sent_us: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds elapsed since a process-wide monotonic epoch (fixed on first use).
pub fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// What fills a stamped message up to its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Padding {
    /// `x` repeated: the cheapest to build, and compresses to almost nothing.
    #[default]
    X,
    /// Lower-case English words separated by spaces, a different sequence for every message
    /// (picked by a generator seeded with the sequence number): compresses like text.
    Words,
}

impl std::str::FromStr for Padding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x" => Ok(Self::X),
            "words" => Ok(Self::Words),
            other => Err(format!("unknown padding {other:?} (expected x or words)")),
        }
    }
}

/// The words of [`Padding::Words`] (none contains `:` or `;`, which end a stamp's fields).
const WORDS: [&str; 64] = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like",
    "him",
];

/// Appends words picked by a xorshift generator seeded with `seed` until `s` is `target`
/// bytes long (the last word is cut to fit).
fn push_words(s: &mut String, seed: u64, target: usize) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() < target {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = WORDS[(state % WORDS.len() as u64) as usize];
        s.push(' ');
        let room = target - s.len();
        s.push_str(&word[..word.len().min(room)]);
    }
}

/// Builds the content of a stamped JSON string (without the surrounding quotes).
///
/// The result is padded with `x` so that its JSON encoding, quotes included, is `size` bytes
/// long; when `size` is smaller than the bare stamp the stamp is returned unpadded.
pub fn stamped_data(seq: u64, sent_us: u64, size: usize) -> String {
    stamped_data_with(seq, sent_us, size, Padding::X)
}

/// [`stamped_data`] with the given padding.
pub fn stamped_data_with(seq: u64, sent_us: u64, size: usize, padding: Padding) -> String {
    let mut s = String::with_capacity(size.max(48));
    s.push_str(MARKER);
    s.push_str(&seq.to_string());
    s.push(':');
    s.push_str(&sent_us.to_string());
    s.push(';');
    let target = size.saturating_sub(2);
    match padding {
        Padding::X => {
            while s.len() < target {
                s.push('x');
            }
        }
        Padding::Words => push_words(&mut s, seq, target),
    }
    s
}

/// Finds the first stamp in `frame` (a whole received text frame) without parsing the JSON.
///
/// Returns `None` when there is no well-formed stamp (missing marker, non-digit characters,
/// overflow).
pub fn parse_stamp(frame: &str) -> Option<Stamp> {
    let start = frame.find(MARKER)? + MARKER.len();
    let rest = &frame.as_bytes()[start..];
    let (seq, used) = parse_u64_until(rest, b':')?;
    let (sent_us, _) = parse_u64_until(&rest[used + 1..], b';')?;
    Some(Stamp { seq, sent_us })
}

/// Parses decimal digits up to `end`; returns the value and the number of digits consumed.
fn parse_u64_until(bytes: &[u8], end: u8) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == end {
            return (i > 0).then_some((value, i));
        }
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    None
}

/// Client → server `room` event carrying `data` (already a valid JSON string body) to `room`.
///
/// `room` and `data` must not need JSON escaping (the generator only uses ASCII letters,
/// digits and `:;-_x`).
pub fn room_frame(room: &str, data: &str) -> String {
    format!(r#"{{"event":"room","payload":{{"room":"{room}","data":"{data}"}}}}"#)
}

/// Client → server `join` event for `room` asking for a reply with `callback_id`.
pub fn join_frame(room: &str, callback_id: &str) -> String {
    format!(r#"{{"event":"join","payload":{{"room":"{room}"}},"callbackId":"{callback_id}"}}"#)
}

/// Client → server `echo` event with a string payload and a callback id.
pub fn echo_frame(data: &str, callback_id: u64) -> String {
    format!(r#"{{"event":"echo","payload":"{data}","callbackId":"{callback_id}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_relayed_frame() {
        let data = stamped_data(42, 1_234_567, 100);
        assert_eq!(data.len() + 2, 100);
        let relayed = format!(r#"{{"event":"msg","payload":"{data}"}}"#);
        assert_eq!(
            parse_stamp(&relayed),
            Some(Stamp {
                seq: 42,
                sent_us: 1_234_567
            })
        );
        // The frame we send is valid JSON and carries the data verbatim.
        let frame = room_frame("bench", &data);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["payload"]["data"], serde_json::Value::String(data));
    }

    #[test]
    fn word_padding_has_the_size_and_keeps_the_stamp() {
        for size in [0, 20, 100, 1000] {
            let data = stamped_data_with(9, 77, size, Padding::Words);
            assert_eq!(data.len(), size.saturating_sub(2).max(10), "{size}");
            assert_eq!(
                parse_stamp(&data),
                Some(Stamp {
                    seq: 9,
                    sent_us: 77
                })
            );
            assert!(data
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":; ".contains(&b)));
        }
        assert_ne!(
            stamped_data_with(1, 0, 200, Padding::Words)[8..],
            stamped_data_with(2, 0, 200, Padding::Words)[8..]
        );
        assert_eq!("words".parse(), Ok(Padding::Words));
        assert!("y".parse::<Padding>().is_err());
    }

    #[test]
    fn small_sizes_keep_the_whole_stamp() {
        let data = stamped_data(7, 8, 0);
        assert_eq!(data, "cwb1:7:8;");
        assert_eq!(parse_stamp(&data).map(|s| s.seq), Some(7));
    }

    #[test]
    fn malformed_stamps_are_rejected() {
        assert_eq!(parse_stamp(""), None);
        assert_eq!(parse_stamp("cwb1:"), None);
        assert_eq!(parse_stamp("cwb1::5;"), None);
        assert_eq!(parse_stamp("cwb1:1:;"), None);
        assert_eq!(parse_stamp("cwb1:1a:5;"), None);
        assert_eq!(parse_stamp("cwb1:1:5"), None);
        assert_eq!(parse_stamp("cwb1:99999999999999999999999:5;"), None);
    }

    #[test]
    fn echo_reply_is_parsed() {
        let data = stamped_data(3, 900, 16);
        let reply = format!(r#"{{"callbackId":"3","payload":"{data}"}}"#);
        assert_eq!(
            parse_stamp(&reply),
            Some(Stamp {
                seq: 3,
                sent_us: 900
            })
        );
        let v: serde_json::Value = serde_json::from_str(&echo_frame(&data, 3)).unwrap();
        assert_eq!(v["callbackId"], "3");
        let v: serde_json::Value = serde_json::from_str(&join_frame("r", "j1")).unwrap();
        assert_eq!(v["payload"]["room"], "r");
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
    }
}

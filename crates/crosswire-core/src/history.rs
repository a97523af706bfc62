//! Message history: streams of positioned messages that a reconnecting client can read
//! again from where it left off.
//!
//! A *stream* (one per recoverable room) holds its last messages within a [`Retention`].
//! Every message appended gets a [`Position`]: an offset, 1, 2, 3, … with no gap, within an
//! epoch, which names one unbroken history; when the history is lost (a broker flushed, a
//! stream moved to another broker node) the epoch changes and offsets start again, so a
//! client holding an old position learns it cannot recover instead of silently missing
//! messages.
//!
//! A [`Broker`](crate::Broker) that keeps history appends and publishes in one step
//! ([`Broker::publish_recorded`](crate::Broker::publish_recorded)): every subscriber gets the
//! message with its position in [`BrokerMessage::position`](crate::BrokerMessage), and
//! [`Broker::read_stream`](crate::Broker::read_stream) reads a stream back. [`MemoryHistory`]
//! is the in-memory store, used by a single node and by the [`MemoryHub`](crate::MemoryHub).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use crosswire_core::history::{MemoryHistory, Retention};
//!
//! let mut history = MemoryHistory::new();
//! let window = Retention::new(2, Duration::from_secs(60));
//! let now = Instant::now();
//! for text in ["a", "b", "c"] {
//!     history.append("chat/lobby", text, &window, now);
//! }
//! // A client that saw offset 1 missed 2 and 3; the history keeps both.
//! let read = history.read("chat/lobby", Some(1), &window, now);
//! assert!(read.complete);
//! assert_eq!(read.entries, vec![(2, "b"), (3, "c")]);
//! // One that saw nothing beyond 0 missed 1, which is gone: it must reload.
//! assert!(!history.read("chat/lobby", Some(0), &window, now).complete);
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message's place in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1 for the first message of an epoch, then one more for each.
    pub offset: u64,
    /// Names the unbroken history the offset belongs to.
    pub epoch: Arc<str>,
}

impl Position {
    /// Offset `offset` of epoch `epoch`.
    pub fn new(offset: u64, epoch: impl Into<Arc<str>>) -> Self {
        Self {
            offset,
            epoch: epoch.into(),
        }
    }
}

/// How much of a stream is kept: at most `max_len` messages, none older than `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per stream (a broker may keep a few more; never fewer). Default 100.
    pub max_len: usize,
    /// How long a message is kept. Default 2 minutes.
    pub ttl: Duration,
}

impl Retention {
    /// At most `max_len` messages (at least 1), none older than `ttl`.
    pub fn new(max_len: usize, ttl: Duration) -> Self {
        Self {
            max_len: max_len.max(1),
            ttl,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::new(100, Duration::from_secs(120))
    }
}

/// What reading a stream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead<T> {
    /// The stream's epoch.
    pub epoch: Arc<str>,
    /// The offset of the stream's last message; 0 before the first.
    pub top: u64,
    /// The kept messages after the offset asked for, oldest first.
    pub entries: Vec<(u64, T)>,
    /// Whether `entries` holds *every* message after the offset asked for (none was trimmed
    /// away by the retention). Always false when no offset was asked for.
    pub complete: bool,
}

/// How long a stream's epoch and last offset outlive its last message: a client connected
/// through a quiet hour can still recover on a short reconnect.
pub const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// Streams kept in memory, each bounded by the [`Retention`] given on append.
#[derive(Debug)]
pub struct MemoryHistory<T> {
    streams: HashMap<Arc<str>, Stream<T>>,
    /// Prefix of every epoch made here: one run of the process.
    run: u64,
    made: u64,
    /// When expired messages and unused streams were last swept away.
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Stream<T> {
    epoch: Arc<str>,
    top: u64,
    last_used: Instant,
    /// The retention of the last append, which the sweep trims by.
    retention: Retention,
    entries: VecDeque<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    offset: u64,
    at: Instant,
    value: T,
}

impl<T> Default for MemoryHistory<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// How often expired messages and unused streams are swept away (on an append), so that a
/// stream nobody sends to or reads any more does not hold its messages until it is touched.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<T> MemoryHistory<T> {
    /// An empty store; its epochs are unique to this process run.
    pub fn new() -> Self {
        Self {
            streams: HashMap::new(),
            run: crate::random_u64(),
            made: 0,
            swept: None,
        }
    }

    /// Appends `value` to `stream` (created, with a new epoch, when unknown) and trims the
    /// stream to `retention`; returns the value's position.
    pub fn append(
        &mut self,
        stream: &str,
        value: T,
        retention: &Retention,
        now: Instant,
    ) -> Position {
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.sweep(now);
        }
        let s = self.stream(stream, now);
        s.retention = *retention;
        s.top += 1;
        s.entries.push_back(Entry {
            offset: s.top,
            at: now,
            value,
        });
        s.trim(retention, now);
        Position::new(s.top, Arc::clone(&s.epoch))
    }

    /// Reads `stream`: its epoch and last offset, and the kept messages after `since`
    /// (none when `since` is `None`).
    pub fn read(
        &mut self,
        stream: &str,
        since: Option<u64>,
        retention: &Retention,
        now: Instant,
    ) -> StreamRead<T>
    where
        T: Clone,
    {
        let s = self.stream(stream, now);
        s.trim(retention, now);
        let (entries, complete) = match since {
            None => (Vec::new(), false),
            Some(since) => {
                let entries: Vec<(u64, T)> = s
                    .entries
                    .iter()
                    .filter(|e| e.offset > since)
                    .map(|e| (e.offset, e.value.clone()))
                    .collect();
                let first = entries.first().map_or(s.top + 1, |(o, _)| *o);
                (entries, since <= s.top && first == since + 1)
            }
        };
        StreamRead {
            epoch: Arc::clone(&s.epoch),
            top: s.top,
            entries,
            complete,
        }
    }

    /// How many streams are held.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The stream `name`, made with a new epoch when unknown (the key is allocated per call:
    /// a few bytes beside the message itself).
    fn stream(&mut self, name: &str, now: Instant) -> &mut Stream<T> {
        let (run, made) = (self.run, &mut self.made);
        let s = self.streams.entry(Arc::from(name)).or_insert_with(|| {
            *made += 1;
            Stream {
                epoch: Arc::from(format!("{run:x}-{made}")),
                top: 0,
                last_used: now,
                retention: Retention::default(),
                entries: VecDeque::new(),
            }
        });
        s.last_used = now;
        s
    }

    /// Drops expired messages, and forgets the streams unused for [`META_TTL`].
    fn sweep(&mut self, now: Instant) {
        self.streams.retain(|_, s| {
            let retention = s.retention;
            s.trim(&retention, now);
            now.saturating_duration_since(s.last_used) < META_TTL
        });
    }

    /// How many messages are held, over every stream.
    pub fn messages(&self) -> usize {
        self.streams.values().map(|s| s.entries.len()).sum()
    }
}

impl<T> Stream<T> {
    fn trim(&mut self, retention: &Retention, now: Instant) {
        while self.entries.len() > retention.max_len {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > retention.ttl)
        {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_up_and_the_window_trims() {
        let mut h = MemoryHistory::new();
        let w = Retention::new(3, Duration::from_secs(10));
        let t = Instant::now();
        let positions: Vec<u64> = (0..5).map(|i| h.append("s", i, &w, t).offset).collect();
        assert_eq!(positions, vec![1, 2, 3, 4, 5]);
        let read = h.read("s", Some(2), &w, t);
        assert_eq!(read.top, 5);
        assert!(read.complete, "3..=5 are all kept");
        assert_eq!(read.entries, vec![(3, 2), (4, 3), (5, 4)]);
        let read = h.read("s", Some(1), &w, t);
        assert!(!read.complete, "2 was trimmed");
        // Caught up: nothing missed, nothing to send.
        let read = h.read("s", Some(5), &w, t);
        assert!(read.complete && read.entries.is_empty());
        // Ahead of the stream (another epoch's offset): not recoverable.
        assert!(!h.read("s", Some(9), &w, t).complete);
        // A first read asks for nothing and recovers nothing.
        let read = h.read("s", None, &w, t);
        assert!(!read.complete && read.entries.is_empty());
    }

    #[test]
    fn a_stream_left_alone_loses_its_expired_messages_at_the_next_sweep() {
        let mut h = MemoryHistory::new();
        let w = Retention::new(100, Duration::from_secs(10));
        let t = Instant::now();
        for i in 0..50 {
            h.append("quiet", i, &w, t);
        }
        assert_eq!(h.messages(), 50);
        // Another stream's append a minute later sweeps the quiet one's expired messages.
        h.append("busy", 0, &w, t + Duration::from_secs(60));
        assert_eq!(h.messages(), 1);
        assert_eq!(h.len(), 2, "the quiet stream's epoch and offset stay");
        // And after a day unused, the stream itself goes.
        h.append("busy", 1, &w, t + META_TTL + Duration::from_secs(1));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn old_messages_expire_and_streams_have_their_own_epochs() {
        let mut h = MemoryHistory::new();
        let w = Retention::new(100, Duration::from_secs(10));
        let t = Instant::now();
        h.append("a", 'x', &w, t);
        let later = t + Duration::from_secs(11);
        h.append("a", 'y', &w, later);
        let read = h.read("a", Some(0), &w, later);
        assert_eq!(read.entries, vec![(2, 'y')]);
        assert!(!read.complete, "1 expired");
        assert!(h.read("a", Some(1), &w, later).complete);
        let b = h.append("b", 'z', &w, t);
        assert_eq!(b.offset, 1);
        assert_ne!(b.epoch, h.read("a", None, &w, t).epoch);
        // An empty stream read first still has an epoch, which its first message keeps.
        let epoch = h.read("c", None, &w, t).epoch;
        assert_eq!(h.append("c", 'q', &w, t).epoch, epoch);
    }
}

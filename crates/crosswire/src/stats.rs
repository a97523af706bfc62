//! Node-wide counters and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Node-wide counters, bumped with relaxed atomics where things happen.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) local_deliveries: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) unknown_events: AtomicU64,
    pub(crate) rejected_events: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
    pub(crate) ping_timeouts: AtomicU64,
    pub(crate) refused_origin: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) unbound_timeouts: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    pub(crate) deflate_connections: AtomicU64,
    pub(crate) compressed_messages: AtomicU64,
    pub(crate) compressed_bytes_in: AtomicU64,
    pub(crate) compressed_bytes_out: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) recoveries_missed: AtomicU64,
    pub(crate) replayed_messages: AtomicU64,
    pub(crate) history_errors: AtomicU64,
    pub(crate) unconfirmed_joins: AtomicU64,
    /// Traffic of the sockets that have closed (the live ones are summed when asked).
    pub(crate) closed_traffic: Traffic,
    /// Closes by close code.
    pub(crate) closes: CloseCodes,
}

/// Message and byte totals, added to once per socket when it closes.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    pub(crate) fn add(&self, s: &SocketStats) {
        self.messages_in.fetch_add(s.messages_in, Ordering::Relaxed);
        self.bytes_in.fetch_add(s.bytes_in, Ordering::Relaxed);
        self.messages_out
            .fetch_add(s.messages_out, Ordering::Relaxed);
        self.bytes_out.fetch_add(s.bytes_out, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SocketStats {
        SocketStats {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Snapshot of a socket's traffic counters (or a node's: the sum over its sockets, open and
/// closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SocketStats {
    /// Messages received (text and binary).
    pub messages_in: u64,
    /// Bytes received, frame headers included.
    pub bytes_in: u64,
    /// Frames queued to the client.
    pub messages_out: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
}

impl std::ops::AddAssign for SocketStats {
    fn add_assign(&mut self, other: Self) {
        self.messages_in += other.messages_in;
        self.bytes_in += other.bytes_in;
        self.messages_out += other.messages_out;
        self.bytes_out += other.bytes_out;
    }
}

/// The close codes counted one by one; any other counts as "other", so the label set of a
/// metric by close code stays bounded whatever codes clients and applications use.
pub(crate) const CLOSE_CODES: [u16; 19] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 4001, 4002,
    4010, 4011, 4012,
];

/// Closes by code: one slot per code of [`CLOSE_CODES`] and one for the others.
#[derive(Debug, Default)]
pub(crate) struct CloseCodes {
    counts: [AtomicU64; CLOSE_CODES.len() + 1],
}

impl CloseCodes {
    pub(crate) fn record(&self, code: u16) {
        let slot = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every code seen at least once; `None` for the others.
    pub(crate) fn seen(&self) -> impl Iterator<Item = (Option<u16>, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, n)| (CLOSE_CODES.get(i).copied(), n.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
    }
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Sockets connected now.
    pub connections: usize,
    /// Traffic of every socket since start, open and closed: client messages and bytes in,
    /// frames and bytes out (local deliveries, replies, heartbeats).
    pub traffic: SocketStats,
    /// Sockets bound to an id now.
    pub bound_ids: usize,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Frames dropped as malformed (not JSON, no event, wrong types, bad callbackId, binary).
    pub malformed_frames: u64,
    /// Events with no handler.
    pub unknown_events: u64,
    /// Events whose handler was not called because an extractor failed (e.g. a payload that
    /// does not fit `Data<T>`).
    pub rejected_events: u64,
    /// Handlers that panicked (caught; the socket they ran for was closed with 1011).
    pub handler_panics: u64,
    /// Connections closed for breaking RFC 6455 (including oversized messages).
    pub protocol_errors: u64,
    /// Messages not queued because a socket's queue was full.
    pub dropped_messages: u64,
    /// Sockets disconnected because their queue was full.
    pub slow_disconnects: u64,
    /// Sockets terminated for missing a protocol pong.
    pub ping_timeouts: u64,
    /// Upgrades refused with 403: `Origin` not in the allowlist.
    pub refused_origin: u64,
    /// Upgrades refused with 503: the node held its maximum of connections.
    pub refused_capacity: u64,
    /// Client messages over their connection's rate limit (dropped, or the connection
    /// closed, per the policy).
    pub rate_limited: u64,
    /// Sockets closed for not being bound to an id in time.
    pub unbound_timeouts: u64,
    /// Connections closed for not sending their request head in time (silent or slow).
    pub handshake_timeouts: u64,
    /// Failed accepts on the server's listener (e.g. at the file limit), each followed by a
    /// 100 ms pause.
    pub accept_errors: u64,
    /// TLS handshakes that failed (bad client hello, unknown protocol, …).
    pub tls_failures: u64,
    /// Connections that negotiated permessage-deflate.
    pub deflate_connections: u64,
    /// Messages compressed (once per message and window size, however many sockets got it).
    pub compressed_messages: u64,
    /// Bytes of the frames compressed, before compression.
    pub compressed_bytes_in: u64,
    /// Bytes of the same frames, compressed.
    pub compressed_bytes_out: u64,
    /// Broker messages not published because the publish queue was full.
    pub broker_dropped: u64,
    /// Envelopes received from other nodes and handled.
    pub envelopes_received: u64,
    /// Envelopes received twice (e.g. through two Redis nodes) and dropped.
    pub envelopes_duplicate: u64,
    /// Client-bound deliveries received from other nodes (envelopes, each for one or many
    /// sockets).
    pub remote_deliveries: u64,
    /// Messages queued to this node's sockets by emits (to a room, ids, everyone), whichever
    /// node sent them: one per receiving socket.
    pub local_deliveries: u64,
    /// Re-joins with a position that got every missed message ([`crate::Server::join_recovering`]).
    pub recoveries: u64,
    /// Re-joins with a position that could not be recovered (past the window, or another
    /// epoch): the client was told `recovered: false`.
    pub recoveries_missed: u64,
    /// Missed messages queued by recoveries.
    pub replayed_messages: u64,
    /// History reads and writes that failed (the broker was down): a read joins without
    /// recovery; a recorded message is delivered to this node's sockets live, without a
    /// position (and is in no history).
    pub history_errors: u64,
    /// Joins whose room subscription the broker did not confirm in time
    /// ([`crate::Server::join_confirmed`]): the id joined, messages from other nodes lag.
    pub unconfirmed_joins: u64,
}

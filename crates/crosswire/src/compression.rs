//! permessage-deflate (RFC 7692) on the server side: the settings, what one connection
//! negotiated, and a frame compressed at most once however many sockets it goes to.
//!
//! Every accepted offer is answered with no context takeover in both directions
//! ([`crosswire_protocol::deflate`]), so a compressed message does not depend on the
//! connection it goes to — only on the window the client allowed. A broadcast is compressed
//! once per window size among its recipients (in practice once: browsers do not limit the
//! server's window) and the same bytes are shared, by reference count, by all of them.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crosswire_protocol::deflate::{self, Params};

use crate::stats::Counters;

/// permessage-deflate settings ([`crate::ServerConfig::with_permessage_deflate`]). Compression is
/// off unless set; when set, it is used with every client that offers it.
///
/// ```
/// use crosswire::{PerMessageDeflate, ServerConfig};
/// let config = ServerConfig::default().with_permessage_deflate(PerMessageDeflate::new().with_min_size(512));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerMessageDeflate {
    pub(crate) level: u8,
    pub(crate) min_size: usize,
}

impl Default for PerMessageDeflate {
    fn default() -> Self {
        Self::new()
    }
}

impl PerMessageDeflate {
    /// The defaults: level 1, messages of 256 bytes and more.
    pub fn new() -> Self {
        Self {
            level: 1,
            min_size: 256,
        }
    }

    /// zlib's compression level, 0 (store) to 9 (smallest, slowest); larger values count as
    /// 9. Default: 1, the fastest, which on JSON gives most of what level 9 does.
    pub fn with_level(mut self, level: u8) -> Self {
        self.level = level.min(9);
        self
    }

    /// Messages smaller than this many bytes are sent uncompressed (RFC 7692 lets a sender
    /// choose message by message): compressing a short message costs more time than it
    /// saves bytes. Messages from clients are inflated whatever their size. Default: 256.
    pub fn with_min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }
}

/// What one connection negotiated: the window its client allowed, and the node's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deflate {
    params: Params,
    min_size: usize,
}

impl Deflate {
    /// The agreement for a request's `Sec-WebSocket-Extensions` values, if compression is on
    /// and the client offered something acceptable: the connection's settings and the value
    /// to answer with.
    pub(crate) fn negotiate<'a>(
        settings: Option<&PerMessageDeflate>,
        offers: impl IntoIterator<Item = &'a str>,
    ) -> Option<(Self, String)> {
        let settings = settings?;
        let agreement = deflate::negotiate(offers)?;
        let params = Params {
            level: settings.level,
            ..agreement.params
        };
        let deflate = Self {
            params,
            min_size: settings.min_size,
        };
        Some((deflate, agreement.response))
    }

    /// `frame` compressed for this connection, when it is a whole data message large enough.
    pub(crate) fn compress(&self, frame: &Bytes, counters: &Counters) -> Option<Bytes> {
        if !self.wants(frame) {
            return None;
        }
        let compressed = deflate::compress_server_frame(frame, self.params)?;
        let add = |counter: &AtomicU64, n: usize| counter.fetch_add(n as u64, Ordering::Relaxed);
        add(&counters.compressed_messages, 1);
        add(&counters.compressed_bytes_in, frame.len());
        add(&counters.compressed_bytes_out, compressed.len());
        Some(compressed)
    }
}

impl Deflate {
    /// Whether `frame` is large enough to try (a cheap check before any work).
    pub(crate) fn wants(&self, frame: &Bytes) -> bool {
        frame.len() >= self.min_size.saturating_add(2)
    }
}

/// Windows a client may allow the server (9–15 bits): one cached variant each.
const WINDOWS: usize = (deflate::MAX_WINDOW_BITS - 8) as usize;

/// A frame on its way to many sockets, compressed at most once per window size, lazily, the
/// first time a recipient that negotiated compression is met.
pub(crate) struct Outgoing<'a> {
    plain: &'a Bytes,
    /// By window bits − 9: `None` not tried yet, `Some(None)` not compressible (not a
    /// whole data frame, or too small).
    compressed: [Option<Option<Bytes>>; WINDOWS],
}

impl<'a> Outgoing<'a> {
    pub(crate) fn new(plain: &'a Bytes) -> Self {
        Self {
            plain,
            compressed: Default::default(),
        }
    }

    /// The bytes for a socket that negotiated `deflate` (or none).
    pub(crate) fn for_socket(&mut self, deflate: Option<&Deflate>, counters: &Counters) -> Bytes {
        let Some(deflate) = deflate else {
            return self.plain.clone();
        };
        let slot = usize::from(deflate.params.window_bits.saturating_sub(9)).min(WINDOWS - 1);
        self.compressed[slot]
            .get_or_insert_with(|| deflate.compress(self.plain, counters))
            .as_ref()
            .unwrap_or(self.plain)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crosswire_protocol::{frame, ws};

    fn deflate_for(offer: &str) -> Deflate {
        Deflate::negotiate(Some(&PerMessageDeflate::new()), [offer])
            .unwrap()
            .0
    }

    #[test]
    fn off_unless_configured_and_offered() {
        assert!(Deflate::negotiate(None, ["permessage-deflate"]).is_none());
        assert!(Deflate::negotiate(Some(&PerMessageDeflate::new()), ["x-other"]).is_none());
        let (_, response) =
            Deflate::negotiate(Some(&PerMessageDeflate::new()), ["permessage-deflate"]).unwrap();
        assert!(response.starts_with("permessage-deflate"));
    }

    #[test]
    fn a_broadcast_is_compressed_once_per_window() {
        let counters = Counters::default();
        let big = frame::encode_event("m", &"x".repeat(2000)).unwrap();
        let (wide, narrow) = (
            deflate_for("permessage-deflate"),
            deflate_for("permessage-deflate; server_max_window_bits=10"),
        );
        let mut out = Outgoing::new(&big);
        let a = out.for_socket(Some(&wide), &counters);
        let b = out.for_socket(Some(&wide), &counters);
        let c = out.for_socket(Some(&narrow), &counters);
        let plain = out.for_socket(None, &counters);
        assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not compressed twice");
        assert!(a.len() < big.len() / 10);
        assert_ne!(a.as_ptr(), c.as_ptr());
        assert_eq!(plain, big);
        assert_eq!(counters.compressed_messages.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn small_and_control_frames_go_plain() {
        let counters = Counters::default();
        let d = deflate_for("permessage-deflate");
        let small = ws::server_frame(ws::OpCode::Text, &[b'a'; 100]);
        assert!(d.compress(&small, &counters).is_none());
        let ping = ws::server_frame(ws::OpCode::Ping, &[b'a'; 120]);
        let d0 = Deflate::negotiate(
            Some(&PerMessageDeflate::new().with_min_size(0)),
            ["permessage-deflate"],
        )
        .unwrap()
        .0;
        assert!(d0.compress(&ping, &counters).is_none());
        assert!(d0.compress(&small, &counters).is_some());
    }
}

//! Limits that hold under abuse: admission (most connections per node), the `Origin`
//! allowlist, and the per-connection rate limit on client messages.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// What happens to a client message over its connection's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// The message is dropped and the socket's `error` event raised; the connection stays.
    #[default]
    Drop,
    /// The connection is closed with 1008 (policy violation).
    Close,
}

/// A per-connection token bucket on client messages: a sustained rate and a burst, in
/// messages and in bytes (a message is counted in both; either exhausted limits it).
///
/// ```
/// use crosswire::{RateLimit, RateLimitPolicy, ServerConfig};
/// let config = ServerConfig::default().with_rate_limit(
///     RateLimit::new(50.0, 100).with_bytes(64.0 * 1024.0, 256 * 1024).with_policy(RateLimitPolicy::Close),
/// );
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub messages_per_sec: f64,
    /// Messages allowed at once (the bucket's size).
    pub message_burst: u32,
    /// Bytes per second, sustained (`f64::INFINITY`: no byte limit).
    pub bytes_per_sec: f64,
    /// Bytes allowed at once.
    pub byte_burst: u64,
    /// What happens to a message over the limit.
    pub policy: RateLimitPolicy,
}

impl RateLimit {
    /// `messages_per_sec` sustained with bursts of `burst` messages; no byte limit; the
    /// [`RateLimitPolicy::Drop`] policy.
    pub fn new(messages_per_sec: f64, burst: u32) -> Self {
        Self {
            messages_per_sec,
            message_burst: burst.max(1),
            bytes_per_sec: f64::INFINITY,
            byte_burst: u64::MAX,
            policy: RateLimitPolicy::Drop,
        }
    }

    /// Also limits bytes: `bytes_per_sec` sustained with bursts of `burst` bytes.
    pub fn with_bytes(mut self, bytes_per_sec: f64, burst: u64) -> Self {
        self.bytes_per_sec = bytes_per_sec;
        self.byte_burst = burst.max(1);
        self
    }

    /// What happens to a message over the limit. Default: [`RateLimitPolicy::Drop`].
    pub fn with_policy(mut self, policy: RateLimitPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.messages_per_sec > 0.0 && self.bytes_per_sec > 0.0
    }
}

/// One connection's buckets (owned by its task: no atomics).
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    messages: f64,
    bytes: f64,
    refilled: Instant,
}

impl Buckets {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            messages: f64::from(limit.message_burst),
            bytes: limit.byte_burst as f64,
            refilled: Instant::now(),
        }
    }

    /// Adds what the time since the last refill earned (called once per read, not per
    /// message).
    pub(crate) fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let l = &self.limit;
        self.messages = (self.messages + secs * l.messages_per_sec).min(f64::from(l.message_burst));
        self.bytes = (self.bytes + secs * l.bytes_per_sec).min(l.byte_burst as f64);
    }

    /// Takes one message of `len` bytes; false when over the limit (nothing taken then).
    pub(crate) fn take(&mut self, len: usize) -> bool {
        let len = len as f64;
        if self.messages < 1.0 || self.bytes < len {
            return false;
        }
        self.messages -= 1.0;
        self.bytes -= len;
        true
    }

    pub(crate) fn policy(&self) -> RateLimitPolicy {
        self.limit.policy
    }
}

/// How many connections the node holds or is upgrading, against its maximum.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    admitted: AtomicUsize,
    /// Refusals since the last log line, and when it was written: refusals are logged once
    /// per burst, not once each.
    refused: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

/// Quiet time between two log lines about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Admission {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            admitted: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            logged: Mutex::new(None),
        })
    }

    /// A slot for one more connection, held until the connection ends; `None` at the
    /// maximum (the refusal is counted and logged once per burst).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if before < self.max {
            return Some(Admitted(Arc::clone(self)));
        }
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = lock(&self.logged);
        if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(
                max_connections = self.max,
                refused_so_far = refused,
                "connection refused with 503: the node holds its maximum of connections"
            );
        }
        None
    }

    /// Connections refused at the maximum, since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One admitted connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a request's `Origin` passes `allowed`: an empty list allows every origin, and a
/// request without `Origin` (not sent by a browser) always passes — the allowlist protects
/// browsers' users from pages of other sites, which always send it. Entries match the whole
/// origin, case-insensitively (`https://app.example.com`), or any subdomain with a leading
/// `*.` (`https://*.example.com`).
pub(crate) fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    allowed.is_empty() || allowed.iter().any(|entry| origin_matches(origin, entry))
}

fn origin_matches(origin: &str, entry: &str) -> bool {
    if origin.eq_ignore_ascii_case(entry) {
        return true;
    }
    // `scheme://*.domain`: the origin is `scheme://<something>.domain`.
    let Some((scheme, pattern)) = entry.split_once("://") else {
        return false;
    };
    let Some(domain) = pattern.strip_prefix("*.") else {
        return false;
    };
    let Some((o_scheme, host)) = origin.split_once("://") else {
        return false;
    };
    o_scheme.eq_ignore_ascii_case(scheme)
        && host.len() > domain.len() + 1
        && host.is_char_boundary(host.len() - domain.len() - 1)
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain_pattern() {
        let allowed = vec![
            "https://app.example.com".to_string(),
            "https://*.example.org".to_string(),
        ];
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("anything"), &[]));
        assert!(origin_allowed(Some("https://APP.example.com"), &allowed));
        assert!(origin_allowed(Some("https://a.example.org"), &allowed));
        assert!(origin_allowed(Some("https://a.b.example.org"), &allowed));
        assert!(!origin_allowed(Some("https://example.org"), &allowed));
        assert!(!origin_allowed(Some("http://a.example.org"), &allowed));
        assert!(!origin_allowed(Some("https://evilexample.org"), &allowed));
        assert!(!origin_allowed(
            Some("https://app.example.com.evil.net"),
            &allowed
        ));
        assert!(!origin_allowed(Some("null"), &allowed));
    }

    #[test]
    fn buckets_allow_the_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut b = Buckets::new(RateLimit::new(10.0, 3).with_bytes(1000.0, 100));
        b.refilled = start;
        assert!(b.take(10) && b.take(10) && b.take(10));
        assert!(!b.take(10), "burst of 3 spent");
        b.refill(start + Duration::from_millis(100));
        assert!(b.take(10), "one message earned in 100 ms at 10/s");
        assert!(!b.take(10));
        b.refill(start + Duration::from_secs(10));
        assert!(!b.take(101), "larger than the byte burst");
        assert!(b.take(100));
    }

    #[test]
    fn admission_refuses_past_the_maximum_and_frees_slots() {
        let admission = Admission::new(2);
        let a = admission.admit();
        let b = admission.admit();
        assert!(a.is_some() && b.is_some());
        assert!(admission.admit().is_none());
        assert_eq!(admission.refused(), 1);
        drop(a);
        assert!(admission.admit().is_some());
    }
}

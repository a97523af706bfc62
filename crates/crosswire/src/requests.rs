//! Server-to-server requests waiting for their replies: the table of pending requests and
//! the [`ServerReplies`] stream a caller reads them from.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};

use bytes::Bytes;
use crosswire_core::{Histogram, HistogramSnapshot};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sync::lock;

/// One reply to a server-to-server request.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerResponse {
    /// The node that answered.
    pub node: String,
    /// Its reply.
    pub payload: Box<RawValue>,
    /// Replies still expected after this one.
    pub remaining: usize,
}

/// Every reply to a server-to-server request, as [`ServerReplies::collect`] returns them.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ServerResults {
    /// Whether every expected reply arrived in time.
    pub success: bool,
    /// Replies by node name.
    pub responses: BTreeMap<String, Box<RawValue>>,
    /// How many expected replies did not arrive.
    pub unresponded: usize,
}

type ReplySender = mpsc::UnboundedSender<(String, Box<RawValue>)>;

struct Pending {
    tx: ReplySender,
    remaining: usize,
    sent: Instant,
    deadline: Instant,
}

/// Pending requests of this node, and their counters.
#[derive(Default)]
pub(crate) struct Requests {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Requests that ended with some expected replies missing at their deadline.
    timeouts: AtomicU64,
    /// Time from sending a request to each of its replies.
    reply_latency: Histogram,
}

/// What [`Requests`] counted, for metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestStats {
    /// Requests sent.
    pub(crate) sent: u64,
    /// Requests that timed out with replies missing.
    pub(crate) timeouts: u64,
    /// Time from a request to each of its replies.
    pub(crate) reply_latency: HistogramSnapshot,
}

impl Requests {
    pub(crate) fn register(
        &self,
        expected: usize,
        deadline: Instant,
    ) -> (u64, mpsc::UnboundedReceiver<(String, Box<RawValue>)>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        if expected > 0 {
            lock(&self.pending).insert(
                id,
                Pending {
                    tx,
                    remaining: expected,
                    sent: Instant::now(),
                    deadline,
                },
            );
        }
        (id, rx)
    }

    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            sent: self.next.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            reply_latency: self.reply_latency.snapshot(),
        }
    }

    pub(crate) fn resolve(&self, id: u64, from: &str, payload: Bytes) {
        let payload: Box<RawValue> = match serde_json::from_slice::<&RawValue>(&payload) {
            Ok(raw) => raw.to_owned(),
            Err(e) => {
                tracing::warn!(node = %from, error = %e, "dropped a reply that is not JSON");
                return;
            }
        };
        let mut pending = lock(&self.pending);
        let Some(entry) = pending.get_mut(&id) else {
            return;
        };
        self.reply_latency.observe(entry.sent.elapsed());
        let _ = entry.tx.send((from.to_string(), payload));
        entry.remaining = entry.remaining.saturating_sub(1);
        if entry.remaining == 0 {
            pending.remove(&id);
        }
    }

    /// Ends a request (cancelled, or its replies' reader dropped): one still waiting for
    /// replies past its deadline counts as timed out.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let Some(pending) = lock(&self.pending).remove(&id) else {
            return false;
        };
        if Instant::now() >= pending.deadline {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

/// The replies to a server-to-server request: take them one by one with
/// [`ServerReplies::next`], or all at once with [`ServerReplies::collect`]. Dropping it
/// cancels the request.
pub struct ServerReplies {
    id: u64,
    rx: mpsc::UnboundedReceiver<(String, Box<RawValue>)>,
    remaining: usize,
    deadline: tokio::time::Instant,
    requests: Weak<Requests>,
}

impl std::fmt::Debug for ServerReplies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerReplies")
            .field("id", &self.id)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl ServerReplies {
    pub(crate) fn new(
        id: u64,
        rx: mpsc::UnboundedReceiver<(String, Box<RawValue>)>,
        remaining: usize,
        deadline: tokio::time::Instant,
        requests: Weak<Requests>,
    ) -> Self {
        Self {
            id,
            rx,
            remaining,
            deadline,
            requests,
        }
    }

    /// The request id, for [`crate::Server::cancel_server_request`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Replies still expected.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next reply; `None` when all arrived, the timeout passed, or the request was
    /// cancelled.
    pub async fn next(&mut self) -> Option<ServerResponse> {
        if self.remaining == 0 {
            return None;
        }
        match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(Some((node, payload))) => {
                self.remaining -= 1;
                Some(ServerResponse {
                    node,
                    payload,
                    remaining: self.remaining,
                })
            }
            _ => None,
        }
    }

    /// Waits for every expected reply (or the timeout) and returns them by node.
    pub async fn collect(mut self) -> ServerResults {
        let mut responses = BTreeMap::new();
        while let Some(r) = self.next().await {
            responses.insert(r.node, r.payload);
        }
        ServerResults {
            success: self.remaining == 0,
            responses,
            unresponded: self.remaining,
        }
    }
}

impl Drop for ServerReplies {
    fn drop(&mut self) {
        if let Some(requests) = self.requests.upgrade() {
            requests.cancel(self.id);
        }
    }
}

//! Pending server → client requests ([`crate::Socket::request`]), keyed by connection and
//! ack number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::sync::lock;

/// Where the answer to one server → client request goes.
type AckSender = oneshot::Sender<Box<RawValue>>;

/// Pending server → client requests of one node.
#[derive(Default)]
pub(crate) struct Acks {
    next: AtomicU64,
    pending: Mutex<HashMap<(u64, u64), AckSender>>,
}

impl Acks {
    pub(crate) fn register(&self, conn: u64) -> (u64, oneshot::Receiver<Box<RawValue>>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert((conn, n), tx);
        (n, rx)
    }

    pub(crate) fn resolve(&self, conn: u64, n: u64, payload: Box<RawValue>) {
        if let Some(tx) = lock(&self.pending).remove(&(conn, n)) {
            let _ = tx.send(payload);
        }
    }

    pub(crate) fn forget(&self, conn: u64, n: u64) {
        lock(&self.pending).remove(&(conn, n));
    }

    /// Fails every request of a closed connection (their senders are dropped).
    pub(crate) fn drop_conn(&self, conn: u64) {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            pending.retain(|(c, _), _| *c != conn);
        }
    }
}

//! One message waiting to be published, with where it has been tried.

use std::sync::Arc;

use bytes::Bytes;
use crosswire_core::BrokerError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One message waiting to be published on a node, with where it has been tried.
pub(crate) struct PublishJob {
    pub(crate) channel: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) reply: Option<oneshot::Sender<Result<(), BrokerError>>>,
    /// When `publish` was called; retries stop after twice the command timeout.
    pub(crate) started: Instant,
    /// Nodes this copy was queued on, in order.
    pub(crate) tried: Vec<Arc<str>>,
    /// Nodes carrying the other copy (redundancy 2): a retry avoids them.
    pub(crate) siblings: Vec<Arc<str>>,
    /// Set for a recorded publish: the history stream it is appended to.
    pub(crate) record: Option<Record>,
}

/// The history part of a recorded publish.
pub(crate) struct Record {
    pub(crate) stream: Arc<str>,
    pub(crate) retention: crosswire_core::Retention,
}

impl PublishJob {
    /// Reports the outcome to the caller (if it still listens).
    pub(crate) fn finish(mut self, result: Result<(), BrokerError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

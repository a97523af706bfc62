//! The seam between a crosswire node and the rest of its cluster.
//!
//! A [`Broker`] moves opaque byte messages on named channels between nodes: publish,
//! subscribe, unsubscribe, a stream of received messages, and a health report. Nothing about
//! rooms, ids or envelopes leaks into it, so Redis pub/sub (`crosswire-redis`), the
//! in-process [`MemoryHub`], and later NATS or Redis Cluster fit behind the same trait. A
//! node holds it as `Arc<dyn Broker>`: no type parameter reaches handler signatures.
//!
//! This crate has no HTTP or WebSocket code: broker backends depend on it alone, never on
//! the server.
//!
//! ```
//! use crosswire_core::{Broker, MemoryHub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crosswire_core::BrokerError> {
//! let hub = MemoryHub::new();
//! let (a, b) = (hub.broker(), hub.broker());
//! let mut inbox = b.messages()?;
//! b.subscribe("news").await?;
//! a.publish("news", bytes::Bytes::from_static(b"hello")).await?;
//! let message = inbox.recv().await.expect("a message");
//! assert_eq!(&*message.channel, "news");
//! assert_eq!(&message.payload[..], b"hello");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod broker;
pub mod histogram;
pub mod history;

pub use broker::{
    BoxFuture, Broker, BrokerError, BrokerHealth, BrokerMessage, BrokerNodeStats, MemoryBroker,
    MemoryHub,
};
pub use histogram::{Histogram, HistogramSnapshot};
pub use history::{Position, Retention, StreamRead};

/// A random 64-bit number, different in every process run and every call (the clock and the
/// process id hashed with std's randomly keyed hasher): node incarnations, history epochs.
/// Not for secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

//! The broker environment of one test ([`Fixture`]), below the suites that run over it
//! (`cluster_suite`, `broker_suite`).

use std::future::Future;
use std::sync::Arc;

use crosswire::{Broker, MemoryHub, Server, ServerConfig};

/// The broker environment of one test: what it needs started (a `redis-server`, a Redis
/// Cluster, a `nats-server`, or nothing for the in-process hub), and a new broker of it for
/// each node.
pub trait Fixture: Send + Sync + Sized + 'static {
    /// Starts the environment. Blocking is fine (it runs on a worker of the test's runtime
    /// through `block_in_place`); panics, naming what is missing, when a server binary is not
    /// installed: the tests fail, never skip.
    fn start() -> Self;

    /// A new broker of this environment, for one node (or for a scenario publishing raw
    /// envelopes). A broker that connects in the background should be returned once it is
    /// connected ([`crate::broker_suite::healthy`]), so that a node starts on a working broker; scenarios still
    /// wait for node discovery before relying on the cluster.
    fn broker(&self) -> impl Future<Output = Arc<dyn Broker>> + Send;

    /// A node with `config` over a new broker of this environment ([`Fixture::broker`]).
    fn node(&self, config: ServerConfig) -> impl Future<Output = Server> + Send {
        let broker = self.broker();
        async move {
            Server::builder(config)
                .broker(broker.await)
                .build()
                .expect("a valid node configuration")
        }
    }
}

/// The in-process broker hub ([`MemoryHub`]): every node of the test on one hub. It keeps
/// history.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    hub: MemoryHub,
}

impl Hub {
    /// The hub the nodes are on.
    pub fn hub(&self) -> &MemoryHub {
        &self.hub
    }
}

impl Fixture for Hub {
    fn start() -> Self {
        Self {
            hub: MemoryHub::new(),
        }
    }

    fn broker(&self) -> impl Future<Output = Arc<dyn Broker>> + Send {
        let broker: Arc<dyn Broker> = Arc::new(self.hub.broker());
        std::future::ready(broker)
    }
}

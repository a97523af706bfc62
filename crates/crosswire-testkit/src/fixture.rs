//! The broker environment of one test ([`Fixture`]), below the suites that run over it
//! (`cluster_suite`, `broker_suite`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crosswire::{Broker, MemoryBroker, MemoryHub, Server, ServerConfig};

use crate::{install_relay, serve_on_free_port, wait_until, TIMEOUT};

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

/// A node on a [`MemoryHub`] with the relay handlers ([`install_relay`]) and a listener, and
/// its broker, whose subscriptions the hub shows as they are.
pub struct HubNode {
    /// The node.
    pub server: Server,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its broker on the hub.
    pub broker: Arc<MemoryBroker>,
}

impl HubNode {
    /// A node with `config` on `hub`, once it has subscribed to the everyone channel
    /// (`crosswire:ws:all`).
    pub async fn start(hub: &MemoryHub, config: ServerConfig) -> Self {
        let broker = Arc::new(hub.broker());
        let server = Server::builder(config)
            .broker(Arc::clone(&broker) as Arc<dyn Broker>)
            .build()
            .expect("a valid node configuration");
        install_relay(&server);
        let addr = serve_on_free_port(&server).await;
        let node = Self {
            server,
            addr,
            broker,
        };
        assert!(node.subscribed("crosswire:ws:all", true).await);
        node
    }

    /// Whether the node's subscription to `channel` is (or, false: is not) there within
    /// [`TIMEOUT`].
    pub async fn subscribed(&self, channel: &str, subscribed: bool) -> bool {
        wait_until(TIMEOUT, || self.is_subscribed(channel) == subscribed).await
    }

    /// Whether the node is subscribed to `channel` now.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.broker.subscriptions().iter().any(|c| c == channel)
    }
}

//! The cluster suite every broker runs (`crosswire_testkit::broker_suite`), over a real
//! `nats-server` (started per test): every target kind, server-to-server requests, discovery,
//! takeover, order per room, compressed envelopes, custom channels and presence. NATS keeps no
//! history: a node with history configured is refused.

use std::sync::Arc;

use crosswire::Broker;
use crosswire_nats::{NatsBroker, NatsConfig};
use crosswire_testkit::broker_suite::{healthy, Fixture};
use crosswire_testkit::NatsServer;

/// One `nats-server` for every node of a test.
struct Nats(NatsServer);

impl Fixture for Nats {
    fn start() -> Self {
        assert!(
            NatsServer::available(),
            "nats-server is not installed (scripts/test.sh installs Debian's nats-server) — tests that need it fail rather than skip"
        );
        Self(NatsServer::start().unwrap_or_else(|e| panic!("nats-server did not start: {e}")))
    }

    async fn broker(&self) -> Arc<dyn Broker> {
        let config = NatsConfig::from_urls([self.0.url()]).expect("a valid NATS URL");
        healthy(Arc::new(
            NatsBroker::connect(config).await.expect("a NATS client"),
        ))
        .await
    }
}

crosswire_testkit::broker_suite!(Nats, without_history);

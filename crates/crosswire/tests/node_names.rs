//! Node names on a `MemoryHub`: generated names for nodes built without one, and the
//! `NodeNameConflict` system event when two live nodes share a name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crosswire::system::NodeNameConflict;
use crosswire::{Broker, MemoryHub, Server, ServerConfig};
use crosswire_testkit::{wait_until, TIMEOUT};

fn node(hub: &MemoryHub, config: ServerConfig) -> Server {
    Server::builder(config)
        .broker(Arc::new(hub.broker()) as Arc<dyn Broker>)
        .build()
        .expect("node")
}

#[tokio::test]
async fn nodes_built_with_a_broker_and_no_name_get_distinct_generated_names() {
    let hub = MemoryHub::new();
    let a = node(&hub, ServerConfig::default());
    let b = node(&hub, ServerConfig::default());
    assert_ne!(a.node_name(), b.node_name());
    assert_ne!(a.node_name(), "node-1");
    assert!(wait_until(TIMEOUT, || a.nodes().len() == 2 && b.nodes().len() == 2).await);
    assert!(!a.node_name_conflict() && !b.node_name_conflict());
    // A single node keeps the documented default.
    let single = Server::new(ServerConfig::default()).expect("single node");
    assert_eq!(single.node_name(), "node-1");
}

#[tokio::test]
async fn two_live_nodes_with_one_name_raise_the_conflict_event() {
    let hub = MemoryHub::new();
    let config = || ServerConfig::default().with_node_name("twin");
    let raised = Arc::new(AtomicUsize::new(0));
    let first = node(&hub, config());
    let counter = Arc::clone(&raised);
    first.on_system(move |conflict: NodeNameConflict| {
        assert_eq!(conflict.node, "twin");
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let other = node(&hub, ServerConfig::default().with_node_name("other"));
    assert!(wait_until(TIMEOUT, || first.nodes().len() == 2).await);
    assert!(
        !first.node_name_conflict(),
        "no conflict before the twin starts"
    );
    let second = node(&hub, config());
    assert!(
        wait_until(TIMEOUT, || first.node_name_conflict()
            && second.node_name_conflict())
        .await
    );
    assert!(wait_until(TIMEOUT, || raised.load(Ordering::SeqCst) >= 1).await);
    // One event per episode, however many announcements the twin sent meanwhile.
    assert!(
        !other.node_name_conflict(),
        "a differently named node is not concerned"
    );
    assert_eq!(raised.load(Ordering::SeqCst), 1);
}

//! Server-to-server events and custom channels on a single node, and the channel prefixes a
//! cluster needs. (The scenarios between nodes — requests, discovery, routing, compression,
//! custom channels — run for every broker in the cluster suite: `broker_suite.rs` here for
//! the in-process hub.)

use crosswire::{Server, ServerConfig, ServerEmitOptions};
use crosswire_testkit::cluster_suite::{answer_who, ask_who};

#[tokio::test]
async fn channel_prefixes_must_differ() {
    let bad = ServerConfig::default()
        .with_ws_channel_prefix("app")
        .with_server_channel_prefix("app");
    assert!(matches!(
        Server::new(bad),
        Err(crosswire::ConfigError::ChannelPrefixes { .. })
    ));
    let nested = ServerConfig::default()
        .with_ws_channel_prefix("app")
        .with_server_channel_prefix("app:s2s");
    assert!(Server::new(nested).is_err());
}

#[tokio::test]
async fn single_node_requests_are_answered_in_process() {
    let server = Server::new(ServerConfig::default().with_node_name("solo")).expect("config");
    answer_who(&server);
    assert_eq!(ask_who(&server, ServerEmitOptions::new()).await, ["solo"]);
    assert_eq!(server.nodes(), ["solo"]);
}

/// A single node has no broker: custom channels are refused.
#[tokio::test]
async fn a_single_node_refuses_custom_channels() {
    let single = Server::new(ServerConfig::default()).expect("config");
    assert!(!single.subscribe_channel("news"));
    assert!(!single.publish_raw("news", &b"hello"[..]));
}

//! An echo server for the Autobahn TestSuite's fuzzingclient cases: every text message is
//! sent back as the same text, every binary message as the same bytes.
//!
//! ```text
//! cargo run --release -p autobahn-echo -- 9001
//! ```
//!
//! The only argument is the port on 127.0.0.1 (0 picks a free one); the bound address is
//! printed on standard output as `listening on 127.0.0.1:<port>`. The test of this crate
//! (`tests/autobahn.rs`) starts it and runs the suite against it.
//!
//! permessage-deflate is accepted when a client offers it (sections 12 and 13), with every
//! message compressed whatever its size, so that the suite checks the compressed path
//! rather than the plain one.

use std::time::Duration;

use anyhow::Context as _;
use crosswire::system::{Binary, RawMessage};
use crosswire::{PerMessageDeflate, Server, ServerConfig, Socket};

/// Largest message echoed. Section 9 sends up to 16 MiB in one message; the limit leaves
/// room above that.
const MAX_MESSAGE: usize = 64 << 20;

/// The application heartbeat, moved off its default (the empty string) to a text the suite
/// never sends: an empty text message is then echoed once, like any other.
const HEARTBEAT: &str = "\u{0}autobahn-echo-heartbeat\u{0}";

/// The server's settings for the suite.
fn config() -> ServerConfig {
    ServerConfig::default()
        .with_node_name("autobahn-echo")
        .with_heartbeat_message(HEARTBEAT)
        .with_max_message_size(MAX_MESSAGE)
        // A 16 MiB echo must fit the send queue whatever is queued before it.
        .with_max_queue_bytes(4 * MAX_MESSAGE)
        // No pings of the server's own: the suite compares every frame it receives with
        // what the case expects, and an unasked-for ping would not match.
        .with_server_ping_interval(Duration::ZERO)
        .with_permessage_deflate(PerMessageDeflate::new().with_min_size(0))
}

fn usage() -> anyhow::Error {
    anyhow::anyhow!("usage: autobahn-echo <port>")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or_else(usage)?
        .parse()
        .context("the port must be a number from 0 to 65535")?;
    if args.next().is_some() {
        return Err(usage());
    }

    let server = Server::new(config())?;
    // Every text message, before crosswire reads it as a JSON event (for arbitrary text
    // that only counts a malformed frame).
    server.on_system(|message: RawMessage, socket: Socket| {
        let _ = socket.send_text(&message.text);
    });
    // With a handler registered, every binary message comes here.
    server.on_system(|message: Binary, socket: Socket| {
        let _ = socket.send_binary(&message.data);
    });

    let addr = server.listen(("127.0.0.1", port)).await?;
    println!("listening on {addr}");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

//! Sends the `say` server event to the other nodes in each of the ways the seed's
//! `sender.js` shows: fire and forget, replies one by one (callback style), targeted,
//! except-self, all replies at once (promise style) and a timeout with partial replies.
//!
//! ```text
//! cargo run -p example-cross-server --bin sender -- --name sender
//! ```
//! Start some `cserver` nodes first (see the README).

use std::time::Duration;

use clap::Parser;
use crosswire::{Server, ServerEmitOptions, ServerReplies, ServerResults};
use example_cross_server::Say;

#[derive(Parser)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long, default_value = "senderA")]
    name: String,
    /// A Redis node; repeat for several (equal peers).
    #[arg(long = "redis", default_value = "redis://127.0.0.1:6379")]
    redis: Vec<String>,
    /// Milliseconds between two steps (the first comes after one step).
    #[arg(long, default_value_t = 3000)]
    step_ms: u64,
}

/// Callback style: each reply as it comes, with how many are still missing.
async fn one_by_one(what: &str, mut replies: ServerReplies) {
    while let Some(reply) = replies.next().await {
        tracing::info!(
            what,
            from = %reply.node,
            data = %reply.payload,
            remaining = reply.remaining,
            "reply"
        );
    }
    if replies.remaining() > 0 {
        tracing::warn!(
            what,
            unresponded = replies.remaining(),
            "timed out before every expected reply arrived"
        );
    } else {
        tracing::info!(what, "every expected reply arrived");
    }
}

/// Promise style: all replies at once.
fn report(what: &str, results: &ServerResults) {
    let responses: Vec<String> = results
        .responses
        .iter()
        .map(|(node, reply)| format!("{node}: {reply}"))
        .collect();
    if results.success {
        tracing::info!(what, ?responses, "every expected node responded");
    } else {
        tracing::warn!(
            what,
            ?responses,
            unresponded = results.unresponded,
            "timed out; these nodes responded so far"
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    example_cross_server::init_logging();
    let args = Args::parse();
    tracing::info!(name = %args.name, redis = ?args.redis, "using configured values");
    let server: Server = example_cross_server::server_node(&args.name, &args.redis)?;
    // The sender answers too: a broadcast that includes itself is handled in-process.
    server.on_server("say", example_cross_server::say);
    let me = server.node_name().to_string();
    let start = tokio::time::Instant::now();
    let step = Duration::from_millis(args.step_ms);
    let at = |n: u32| tokio::time::sleep_until(start + step * n);

    // Step 1 (3 s): fire and forget to every node (itself included).
    at(1).await;
    tracing::info!(nodes = ?server.nodes(), "live nodes (node discovery)");
    server.emit_server(
        "say",
        &Say::new(format!("Hi everyone, I am {me}")),
        &ServerEmitOptions::new(),
    )?;

    // Step 2 (6 s): callback style, expecting 3 replies.
    at(2).await;
    let replies = server.request_server(
        "say",
        &Say::new(format!(
            "Hi everyone, I am {me}, please respond with your callback."
        )),
        ServerEmitOptions::new().with_expected_responses(3),
    )?;
    one_by_one("callback, expected 3", replies).await;

    // Step 3 (9 s): targeted at two named nodes.
    at(3).await;
    let results = server
        .request_server(
            "say",
            &Say::new("Only serverA and serverB, please"),
            ServerEmitOptions::new().to(["serverA", "serverB"]),
        )?
        .collect()
        .await;
    report("targeted serverA, serverB", &results);

    // Step 4 (12 s): every node except this one; without expected_responses it waits for
    // exactly the live nodes.
    at(4).await;
    let results = server
        .request_server(
            "say",
            &Say::new(format!("Everyone but {me}")),
            ServerEmitOptions::new().except_self(),
        )?
        .collect()
        .await;
    report("except self", &results);

    // Step 5 (15 s): promise style, expecting 3 replies.
    at(5).await;
    let results = server
        .request_server(
            "say",
            &Say::new(format!(
                "Hi everyone, I am {me}, please respond with your callback for the promise."
            )),
            ServerEmitOptions::new().with_expected_responses(3),
        )?
        .collect()
        .await;
    report("promise, expected 3", &results);

    // Step 6 (18 s): more replies expected than there are nodes: resolves after the 2 s
    // timeout with what arrived.
    at(6).await;
    let results = server
        .request_server(
            "say",
            &Say::new("Expecting more replies than there are nodes"),
            ServerEmitOptions::new()
                .with_expected_responses(server.nodes().len() + 2)
                .with_timeout(Duration::from_secs(2)),
        )?
        .collect()
        .await;
    report("timeout 2 s", &results);

    server.shutdown().await;
    Ok(())
}

//! `crosswire serve --nats`: two real nodes over a real `nats-server` find each other, and a
//! client on one reaches a room member and an id on the other; `--history` with NATS is
//! refused at start.

mod common;

use common::Relay;
use crosswire_testkit::NatsServer;

fn nats() -> NatsServer {
    assert!(
        NatsServer::available(),
        "nats-server is not installed (scripts/test.sh installs Debian's nats-server)"
    );
    NatsServer::start().expect("nats-server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_nats_deliver_to_each_other() {
    let nats = nats();
    let url = nats.url();
    let (n1, n2) = Relay::pair(&["--nats", &url], &["--nats", &url]).await;
    common::room_and_id_across(&n1, &n2).await;
}

#[tokio::test]
async fn history_over_nats_is_refused_at_start() {
    let nats = nats();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crosswire"))
        .args(["serve", "--port", "0", "--nats", &nats.url(), "--history"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("keeps no history"), "{text}");
}

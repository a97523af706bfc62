//! Runs the cross-server example for real: a `redis-server` on a free port, two `cserver`
//! nodes (serverA, serverB) and the `sender`, and checks every step the sender logs and the
//! `say` events each node receives.

#[path = "../../support/process.rs"]
mod process;

use crosswire_testkit::RedisServer;
use process::Proc;

fn cserver(name: &str, redis: &str) -> Proc {
    Proc::spawn(
        name,
        env!("CARGO_BIN_EXE_cserver"),
        &["--name", name, "--redis", redis],
    )
}

#[test]
fn sender_reaches_the_other_nodes_in_every_way() {
    let redis = RedisServer::start().expect("redis-server must be installed to run this test");
    let url = redis.url();
    let a = cserver("serverA", &url);
    let b = cserver("serverB", &url);
    a.wait_line(&["node joined", "node=serverB"]);
    b.wait_line(&["node joined", "node=serverA"]);

    let mut sender = Proc::spawn(
        "sender",
        env!("CARGO_BIN_EXE_sender"),
        &["--name", "sender", "--redis", &url, "--step-ms", "1000"],
    );
    sender.wait_success();

    let line = |parts: &[&str]| {
        let lines = sender.lines(parts);
        assert_eq!(lines.len(), 1, "one sender line with {parts:?}: {lines:#?}");
        lines.into_iter().next().unwrap()
    };
    line(&[
        "live nodes (node discovery)",
        r#"nodes=["sender", "serverA", "serverB"]"#,
    ]);
    // Callback style: three replies one by one, then done.
    let callback = r#"what="callback, expected 3""#;
    assert_eq!(sender.lines(&["sender: reply ", callback]).len(), 3);
    line(&["every expected reply arrived", callback]);
    // Targeted and except-self: exactly serverA and serverB.
    for what in [
        r#"what="targeted serverA, serverB""#,
        r#"what="except self""#,
    ] {
        let report = line(&["every expected node responded", what]);
        // responses=["serverA: {…}", "serverB: {…}"]
        assert!(report.contains(r#""serverA: "#), "{report}");
        assert!(report.contains(r#""serverB: "#), "{report}");
        assert!(!report.contains(r#""sender: "#), "{report}");
    }
    line(&[
        "every expected node responded",
        r#"what="promise, expected 3""#,
    ]);
    // Five replies expected, three nodes: the request ends at its timeout.
    line(&[
        "timed out; these nodes responded so far",
        r#"what="timeout 2 s""#,
        "unresponded=2",
    ]);

    // Each server node got all six sends; the sender the four that include itself.
    let say = [r#"received "say" event"#, "from=sender"];
    a.wait_lines(6, &say);
    b.wait_lines(6, &say);
    assert_eq!(sender.lines(&say).len(), 4);
    a.wait_line(&[
        r#"received "say" event"#,
        "content=Hi everyone, I am sender",
    ]);
}

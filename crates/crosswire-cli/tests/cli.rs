//! The `crosswire` command line itself: arguments, refusal to start, signals.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Raw, Relay, STEP};
use serde_json::json;

/// Runs `crosswire <args>` to completion, at most [`STEP`].
async fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crosswire"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CROSSWIRE_HOST")
        .env_remove("CROSSWIRE_PORT")
        .env_remove("CROSSWIRE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning crosswire");
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crosswire {args:?} did not exit within {STEP:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.wait_with_output().unwrap()
}

fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn help_and_version() {
    let help = run(&["serve", "--help"]).await;
    assert!(help.status.success());
    let text = all_output(&help);
    for flag in [
        "--host",
        "--port",
        "--name",
        "--ping-interval",
        "--max-message-size",
        "--max-queue-bytes",
    ] {
        assert!(text.contains(flag), "{flag} missing from help:\n{text}");
    }
    let version = run(&["--version"]).await;
    assert!(version.status.success());
    assert!(all_output(&version).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn a_port_in_use_is_an_error() {
    let relay = Relay::start(&[]).await;
    let port = relay.port().to_string();
    let output = run(&["serve", "--port", &port]).await;
    assert!(!output.status.success(), "second server on {port} started");
    let text = all_output(&output);
    assert!(
        text.contains(&port),
        "error does not name the port:\n{text}"
    );
    // The first server is unaffected.
    let mut a = Raw::connect(&relay, "a").await;
    a.send_text("").await;
    assert_eq!(a.recv_text().await, "");
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    for args in [
        &["serve", "--port", "0", "--max-message-size", "0"][..],
        &["serve", "--port", "notaport"],
        &["serve", "--port", "70000"],
        &["serve", "--no-such-flag"],
        &["no-such-command"],
    ] {
        let output = run(args).await;
        assert!(
            !output.status.success(),
            "{args:?} was accepted:\n{}",
            all_output(&output)
        );
    }
}

#[tokio::test]
async fn name_is_logged_and_sigint_stops_cleanly() {
    let mut relay = Relay::start(&["--name", "edge-7"]).await;
    relay
        .wait_log("with the node name", |l| {
            l.contains("crosswire relay ready") && l.contains("edge-7")
        })
        .await;
    let mut a = Raw::connect(&relay, "a").await;
    assert_eq!(a.request("echo", json!(1)).await, json!(1));
    relay.signal("INT");
    a.expect_close(1001).await;
    let status = relay.wait_exit(STEP).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_with_no_clients_exits_at_once() {
    let mut relay = Relay::start(&[]).await;
    relay.signal("TERM");
    let started = Instant::now();
    let status = relay.wait_exit(STEP).await;
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `--log-format json`: one JSON object per line; a connection's opening and closing are
/// logged at info inside its span (connection number, bound id, node), a message at debug.
#[tokio::test]
async fn json_logs_carry_the_connection_span() {
    let relay = Relay::start_with(
        &["--log-format", "json", "--name", "j1"],
        &[("RUST_LOG", "info,crosswire::connection=debug")],
    )
    .await;
    let mut client = Raw::connect(&relay, "alice").await;
    assert_eq!(client.request("echo", json!(1)).await, json!(1));
    client.close(4001).await;
    let closed = relay
        .wait_log("the close logged", |l| l.contains("connection closed"))
        .await;
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let closed = parse(&closed);
    assert_eq!(closed["level"], "INFO");
    assert_eq!(closed["fields"]["code"], 4001);
    assert_eq!(closed["span"]["name"], "conn");
    assert_eq!(closed["span"]["id"], "alice");
    assert_eq!(closed["span"]["node"], "j1");
    assert!(closed["span"]["conn"].as_u64().is_some(), "{closed}");
    let lines = relay.lines();
    let opened = lines
        .iter()
        .find(|l| l.contains("connection opened"))
        .map(|l| parse(l))
        .expect("the opening logged");
    assert_eq!(opened["span"], closed["span"]);
    let message = lines
        .iter()
        .map(|l| parse(l))
        .find(|v| v["fields"]["message"] == "message" && v["fields"]["event"] == "echo")
        .expect("the message logged at debug");
    assert_eq!(message["level"], "DEBUG");
    assert_eq!(message["span"]["id"], "alice");
    // Every line the node wrote is JSON.
    for line in &lines {
        parse(line);
    }
}

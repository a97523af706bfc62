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

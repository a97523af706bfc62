//! Node names in a cluster: nodes started without `--name` get unique ones and work together;
//! two live nodes given the same name say so (error log, `/healthz` 503) instead of silently
//! dropping each other's messages as their own echo.

mod common;

use std::time::Duration;

use common::{redis, sync_room, Raw, Relay, CLUSTER_STEP};
use serde_json::{json, Value};

#[allow(non_snake_case)]
fn OK() -> Value {
    json!({"ok": true})
}

/// Starts `crosswire serve --redis <url>` without a name.
async fn unnamed(url: &str) -> Relay {
    Relay::start(&["--redis", url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_without_a_name_get_unique_ones_and_deliver_across() {
    let redis = redis();
    let a = unnamed(&redis.url()).await;
    let b = unnamed(&redis.url()).await;
    let name_of = |body: &Value| body["node"].as_str().unwrap_or_default().to_string();
    let (body_a, _) = a
        .wait_health("both nodes", CLUSTER_STEP, |s, b| {
            s == 200 && b["nodes"].as_array().is_some_and(|n| n.len() == 2)
        })
        .await;
    let (body_b, _) = b
        .wait_health("both nodes", CLUSTER_STEP, |s, b| {
            s == 200 && b["nodes"].as_array().is_some_and(|n| n.len() == 2)
        })
        .await;
    let (name_a, name_b) = (name_of(&body_a), name_of(&body_b));
    assert_ne!(name_a, name_b, "two unnamed nodes got the same name");
    for name in [&name_a, &name_b] {
        assert_ne!(
            name, "node-1",
            "a clustered node kept the single-node default"
        );
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "{name:?}"
        );
    }
    assert_eq!(body_a["name_conflict"], json!(false), "{body_a}");
    // Each logged the name it generated.
    for (relay, name) in [(&a, &name_a), (&b, &name_b)] {
        relay
            .wait_log("generated name", |l| {
                l.contains("no node name given") && l.contains(name.as_str())
            })
            .await;
    }

    // A room message and a direct message cross from one node to the other.
    let mut on_a = Raw::connect(&a, "on-a").await;
    let mut on_b = Raw::connect(&b, "on-b").await;
    assert_eq!(on_b.request("join", json!({"room": "r"})).await, OK());
    sync_room(&mut on_a, "r", &mut [&mut on_b]).await;
    let data = json!({"text": "across"});
    assert_eq!(
        on_a.request("room", json!({"room": "r", "data": data}))
            .await,
        OK()
    );
    on_b.expect_msg(&data).await;
    let data = json!({"text": "direct"});
    assert_eq!(
        on_b.request("to", json!({"id": "on-a", "data": data}))
            .await,
        OK()
    );
    on_a.expect_msg(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_with_one_name_report_the_conflict() {
    let redis = redis();
    let urls = [redis.url()];
    let first = Relay::node("same", &urls, &[]).await;
    let second = Relay::node("same", &urls, &[]).await;
    for relay in [&first, &second] {
        let (body, _) = relay
            .wait_health("a name conflict", CLUSTER_STEP, |status, body| {
                status == 503 && body["name_conflict"] == json!(true)
            })
            .await;
        assert_eq!(body["node"], json!("same"), "{body}");
        relay
            .wait_log("the conflict error", |l| {
                l.contains("ERROR") && l.contains("another live node uses this node's name")
            })
            .await;
    }
    // Both stay up for three announcement intervals more: the conflict is reported once per
    // episode, not once per message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Once the other run is gone for the node time to live, the node is healthy again.
    drop(second);
    first
        .wait_health("the conflict to end", CLUSTER_STEP, |status, body| {
            status == 200 && body["name_conflict"] == json!(false)
        })
        .await;
    let errors = first
        .lines()
        .iter()
        .filter(|l| l.contains("another live node uses this node's name"))
        .count();
    assert_eq!(errors, 1, "the conflict was logged {errors} times");
}

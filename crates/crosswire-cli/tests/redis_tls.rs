//! Redis over TLS (`rediss://`) with a real `redis-server` listening for TLS and requiring
//! client certificates (`tls-auth-clients yes`), certificates made by a throw-away authority:
//! nodes of the library and of the `crosswire serve` binary form a cluster and deliver through
//! it; a node that does not trust the authority, or shows no client certificate, stays
//! unhealthy and says why; settings that cannot work are refused before anything starts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{require_redis_server, sync_room, Raw, Relay, CLUSTER_STEP};
use crosswire::{Server, ServerEmitOptions};
use crosswire_redis::{ConfigError, HealthEventKind, RedisBroker, RedisConfig, RedisTls, Role};
use crosswire_testkit::cluster_suite::{answer_who, node_config, wait_nodes};
use crosswire_testkit::{wait_until, RedisServer, TestCerts};
use serde_json::json;

/// Certificates and a TLS `redis-server`. Panics when `redis-server` is not installed.
fn tls_redis() -> (TestCerts, RedisServer) {
    require_redis_server();
    let certs = TestCerts::generate().expect("generate certificates");
    let redis = RedisServer::start_tls(&certs).expect("start redis-server with TLS");
    (certs, redis)
}

fn trusted(certs: &TestCerts) -> RedisTls {
    RedisTls::default()
        .with_ca_pem(certs.ca_pem.clone())
        .with_client_cert_pem(certs.client_cert_pem.clone(), certs.client_key_pem.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_through_redis_over_tls_with_client_certificates() {
    let (certs, redis) = tls_redis();
    let url = redis.tls_url().expect("TLS port");
    let node = |name: &str| {
        let config = RedisConfig::from_urls([&url])
            .expect("rediss url")
            .with_tls(trusted(&certs));
        let broker = Arc::new(RedisBroker::new(config).expect("broker"));
        let server = Server::builder(node_config(name))
            .broker(broker.clone())
            .build()
            .expect("config");
        (server, broker)
    };
    let (a, a_broker) = node("a");
    let (b, b_broker) = node("b");
    for broker in [&a_broker, &b_broker] {
        assert!(
            wait_until(CLUSTER_STEP, || broker
                .nodes()
                .iter()
                .all(|n| n.publisher_healthy && n.subscriber_healthy))
            .await,
            "{:?}",
            broker.nodes()
        );
    }
    // Discovery and a request answered across nodes: both directions of both connections
    // (publish and subscribe) work over TLS.
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    answer_who(&b);
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().except_self())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    let reply: serde_json::Value =
        serde_json::from_str(results.responses.get("b").expect("b answered").get())
            .expect("JSON reply");
    assert_eq!(reply["node"], json!("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_or_a_missing_client_certificate_keeps_the_node_unhealthy() {
    let (certs, redis) = tls_redis();
    let url = redis.tls_url().expect("TLS port");
    for (case, tls, expect) in [
        // The built-in web roots do not know the test authority.
        ("untrusted", RedisTls::default(), "unknownissuer"),
        // The server asks for a client certificate and gets none.
        (
            "no client certificate",
            RedisTls::default().with_ca_pem(certs.ca_pem.clone()),
            "certificaterequired",
        ),
    ] {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let config = {
            let failures = Arc::clone(&failures);
            RedisConfig::from_urls([&url])
                .expect("rediss url")
                .with_tls(tls)
                .with_reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
                .with_on_health_change(move |e| {
                    if !e.healthy {
                        failures.lock().unwrap().push((
                            e.role,
                            e.event,
                            e.error.clone().unwrap_or_default(),
                        ));
                    }
                })
        };
        let broker = RedisBroker::new(config).expect("broker");
        let failed = |role: Role| {
            failures.lock().unwrap().iter().any(|(r, kind, error)| {
                *r == role
                    && matches!(
                        kind,
                        HealthEventKind::ConnectFailed | HealthEventKind::Disconnected
                    )
                    && error.to_lowercase().contains(expect)
            })
        };
        assert!(
            wait_until(CLUSTER_STEP, || failed(Role::Publisher)
                && failed(Role::Subscriber))
            .await,
            "{case}: {:?}",
            failures.lock().unwrap()
        );
        let health = crosswire::Broker::health(&broker);
        assert_eq!(
            (health.healthy_publishers, health.healthy_subscribers),
            (0, 0),
            "{case}: {health:?}"
        );
        assert!(
            broker
                .nodes()
                .iter()
                .all(|n| !n.publisher_healthy && !n.subscriber_healthy),
            "{case}: {:?}",
            broker.nodes()
        );
    }
}

#[test]
fn tls_settings_that_cannot_work_are_refused_up_front() {
    let url = ["rediss://127.0.0.1:6380"];
    let refused = |tls: RedisTls| {
        let config = RedisConfig::from_urls(url).expect("url").with_tls(tls);
        match config.validate() {
            Err(ConfigError::InvalidTls(reason)) => reason,
            other => panic!("expected InvalidTls, got {other:?}"),
        }
    };
    let reason = refused(RedisTls::default().with_ca_pem("not a certificate"));
    assert!(reason.contains("CA"), "{reason}");
    let certs = TestCerts::generate().expect("certificates");
    let reason = refused(
        RedisTls::default().with_client_cert_pem(certs.client_cert_pem.clone(), "no key here"),
    );
    assert!(reason.contains("client key"), "{reason}");
    // A key that is not the certificate's.
    let other = TestCerts::generate().expect("certificates");
    let reason = refused(
        RedisTls::default()
            .with_client_cert_pem(certs.client_cert_pem.clone(), other.client_key_pem.clone()),
    );
    assert!(reason.contains("client certificate"), "{reason}");
    // Turning certificate checks off is not offered.
    let error = RedisConfig::from_urls(["rediss://127.0.0.1:6380/#insecure"])
        .expect_err("#insecure refused");
    assert!(error.to_string().contains("insecure"), "{error}");
}

/// `crosswire serve --redis rediss://… --redis-ca … --redis-cert … --redis-key …`: two nodes
/// of the binary form a cluster over TLS and relay a room message between their clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_clusters_over_tls() {
    let (certs, redis) = tls_redis();
    let urls = [redis.tls_url().expect("TLS port")];
    let files = [
        certs.path(TestCerts::CA_CERT),
        certs.path(TestCerts::CLIENT_CERT),
        certs.path(TestCerts::CLIENT_KEY),
    ];
    let [ca, cert, key] = files.each_ref().map(|p| p.to_str().expect("utf-8 path"));
    let tls = ["--redis-ca", ca, "--redis-cert", cert, "--redis-key", key];
    let n1 = Relay::node("n1", &urls, &tls).await;
    let n2 = Relay::node("n2", &urls, &tls).await;
    for n in [&n1, &n2] {
        n.wait_cluster(&["n1", "n2"], 1).await;
    }
    let mut a = Raw::connect(&n1, "a").await;
    let mut b = Raw::connect(&n2, "b").await;
    assert_eq!(
        b.request("join", json!({"room": "r"})).await,
        json!({"ok": true})
    );
    sync_room(&mut a, "r", &mut [&mut b]).await;
    let data = json!({"over": "tls"});
    assert_eq!(
        a.request("to", json!({"id": "b", "data": data})).await,
        json!({"ok": true})
    );
    b.expect_msg(&data).await;
}

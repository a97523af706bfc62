//! `crosswire serve --tls-cert --tls-key`: the relay over `wss://`, and the certificate
//! reloaded on SIGHUP and on a file change without a restart.

mod common;

use std::time::Duration;

use common::Relay;
use crosswire_testkit::{connect_wss, wss_echo, TestCerts};
use serde_json::json;

/// Copies a generated pair to the files the relay was started with.
fn install(from: &TestCerts, cert: &std::path::Path, key: &std::path::Path) {
    std::fs::copy(from.path(TestCerts::SERVER_CERT), cert).unwrap();
    std::fs::copy(from.path(TestCerts::SERVER_KEY), key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_wss_and_reloads_its_certificate() {
    let first = TestCerts::generate().unwrap();
    let dir = first.path("live");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    install(&first, &cert, &key);
    let relay = Relay::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let mut ws = connect_wss(relay.addr, &first.ca_pem, "/?id=a")
        .await
        .unwrap();
    assert_eq!(
        wss_echo(&mut ws, json!("over wss")).await,
        json!("over wss")
    );

    // SIGHUP with a new pair in place: new connections get it.
    let second = TestCerts::generate().unwrap();
    install(&second, &cert, &key);
    relay.signal("HUP");
    relay
        .wait_log("the SIGHUP reload", |l| {
            l.contains("TLS certificate reloaded") && l.contains("SIGHUP")
        })
        .await;
    let mut renewed = connect_wss(relay.addr, &second.ca_pem, "/?id=b")
        .await
        .unwrap();
    assert_eq!(wss_echo(&mut renewed, json!(2)).await, json!(2));
    assert!(connect_wss(relay.addr, &first.ca_pem, "/?id=c")
        .await
        .is_err());
    assert_eq!(
        wss_echo(&mut ws, json!("still open")).await,
        json!("still open")
    );

    // A changed file is picked up without a signal (checked every 2 s).
    let third = TestCerts::generate().unwrap();
    install(&third, &cert, &key);
    // A modification time surely unlike the last one, whatever the file system's resolution.
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    for file in [&cert, &key] {
        let file = std::fs::File::options().write(true).open(file).unwrap();
        file.set_modified(later).unwrap();
    }
    relay
        .wait_log("the file-change reload", |l| {
            l.contains("TLS certificate reloaded") && l.contains("file change")
        })
        .await;
    let mut third_client = connect_wss(relay.addr, &third.ca_pem, "/?id=d")
        .await
        .unwrap();
    assert_eq!(wss_echo(&mut third_client, json!(3)).await, json!(3));
}

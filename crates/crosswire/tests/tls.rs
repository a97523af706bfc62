//! `wss://` on the server's own listener: events and replies over TLS, a plain client
//! refused at the TLS layer (counted), and a certificate reload taking effect for new
//! connections while an open one carries on.

use crosswire::{Server, ServerConfig, Tls};
use crosswire_testkit::{
    connect_wss, install_relay, wait_until, wss_echo, TestCerts, WssStream, TIMEOUT,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn read(certs: &TestCerts, name: &str) -> Vec<u8> {
    std::fs::read(certs.path(name)).expect("test certificate file")
}

async fn connect(addr: std::net::SocketAddr, ca_pem: &str, id: &str) -> WssStream {
    connect_wss(addr, ca_pem, &format!("/?id={id}"))
        .await
        .expect("wss connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_events_refuses_plain_clients_and_reloads_its_certificate() {
    let first = TestCerts::generate().unwrap();
    let tls = Tls::from_pem(
        &read(&first, TestCerts::SERVER_CERT),
        &read(&first, TestCerts::SERVER_KEY),
    )
    .unwrap();
    let server = Server::new(ServerConfig::default()).unwrap();
    install_relay(&server);
    let addr = server.listen_tls("127.0.0.1:0", tls.clone()).await.unwrap();

    let mut ws = connect(addr, &first.ca_pem, "a").await;
    assert_eq!(
        wss_echo(&mut ws, json!({"over": "tls"})).await,
        json!({"over": "tls"})
    );
    let big = "y".repeat(1 << 20);
    assert_eq!(wss_echo(&mut ws, json!(big)).await, json!(big));
    assert!(server.socket("a").is_some());
    // The socket knows the client's address although the stream is TLS.
    let addr_seen = server.socket("a").unwrap().remote_addr().map(|a| a.ip());
    assert_eq!(addr_seen, Some("127.0.0.1".parse().unwrap()));

    // A plain-text client gets no WebSocket: the TLS layer refuses it.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1 101"),
        "a plain client was upgraded"
    );
    assert!(wait_until(TIMEOUT, || server.stats().tls_failures == 1).await);

    // A new certificate from another authority: new connections trust only the new one,
    // the open connection carries on.
    let second = TestCerts::generate().unwrap();
    tls.reload_pem(
        &read(&second, TestCerts::SERVER_CERT),
        &read(&second, TestCerts::SERVER_KEY),
    )
    .unwrap();
    let mut renewed = connect(addr, &second.ca_pem, "b").await;
    assert_eq!(
        wss_echo(&mut renewed, json!("new cert")).await,
        json!("new cert")
    );
    let old_trust = connect_wss(addr, &first.ca_pem, "/?id=old").await;
    assert!(old_trust.is_err(), "the old certificate is still served");
    assert_eq!(
        wss_echo(&mut ws, json!("still here")).await,
        json!("still here")
    );
    // A bad pair is refused and the current one stays.
    assert!(tls.reload_pem(b"not a certificate", b"nor a key").is_err());
    let mut again = connect(addr, &second.ca_pem, "c").await;
    assert_eq!(wss_echo(&mut again, json!(3)).await, json!(3));
}

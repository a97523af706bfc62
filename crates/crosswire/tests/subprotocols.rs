//! `Sec-WebSocket-Protocol` negotiation: the server's preference among what the client
//! offers, none when nothing matches, and a per-request choice through `WsUpgrade`.

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use crosswire::system::Connection;
use crosswire::{Server, ServerConfig, Socket, WsUpgrade};
use crosswire_testkit::{recv_within, TIMEOUT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects offering `protocols`; returns the protocol the 101 named, and the open socket.
async fn offer(addr: std::net::SocketAddr, path: &str, protocols: &str) -> (Option<String>, Ws) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let named = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (named, ws)
}

#[tokio::test]
async fn the_server_picks_its_preferred_offered_protocol() {
    let config = ServerConfig::default().with_subprotocols(["v2.chat", "v1.chat"]);
    let server = Server::new(config).unwrap();
    // What each socket negotiated, as its connection event sees it.
    let (tx, mut negotiated) = tokio::sync::mpsc::unbounded_channel();
    server.on_system(move |_: Connection, socket: Socket| {
        let _ = tx.send(socket.protocol().map(str::to_string));
    });
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let (named, _first) = offer(addr, "/?id=a", "v1.chat, v2.chat").await;
    assert_eq!(named.as_deref(), Some("v2.chat"));
    let seen = recv_within(&mut negotiated, TIMEOUT)
        .await
        .expect("connection event");
    assert_eq!(seen.as_deref(), Some("v2.chat"));
    let (named, _second) = offer(addr, "/", "v1.chat").await;
    assert_eq!(named.as_deref(), Some("v1.chat"));
    let seen = recv_within(&mut negotiated, TIMEOUT)
        .await
        .expect("connection event");
    assert_eq!(seen.as_deref(), Some("v1.chat"));
    // Nothing in common: accepted without a protocol (the client decides).
    let offered_other = {
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        tokio_tungstenite::connect_async(request).await
    };
    // tungstenite refuses a 101 that names no protocol it offered.
    assert!(offered_other.is_err());
    let seen = recv_within(&mut negotiated, TIMEOUT)
        .await
        .expect("connection event");
    assert_eq!(seen, None, "the server accepted it with no subprotocol");
}

#[tokio::test]
async fn an_upgrade_handler_chooses_the_protocol_per_request() {
    let server = Server::new(ServerConfig::default()).unwrap();
    async fn ws(
        upgrade: WsUpgrade,
        axum::extract::State(server): axum::extract::State<Server>,
    ) -> Response {
        // The last offered one, whatever the server's list says.
        let last = upgrade.protocols().last().map(|p| p.to_string());
        match last {
            Some(p) => upgrade.with_protocol(p).accept(&server),
            None => upgrade.accept(&server),
        }
    }
    let app = Router::new()
        .route("/ws", get(ws))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_router(listener, app).await });
    let (named, _ws) = offer(addr, "/ws", "a.v1, b.v1").await;
    assert_eq!(named.as_deref(), Some("b.v1"));
}

//! Mounting: a route in an application's axum `Router`, and the app-upgrades-itself mode.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crosswire::system::Connection;
use crosswire::{Ack, Server, ServerConfig, Socket, WsUpgrade};
use crosswire_testkit::{http_get, install_relay, recv_within, ConnectError, RawClient, TIMEOUT};
use tokio::sync::mpsc;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_route_next_to_http_routes_on_one_port() {
    let server = Server::new(ServerConfig::default()).unwrap();
    install_relay(&server);
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", server.ws_handler());
    let addr = serve(app).await;

    assert_eq!(http_get(addr, "/health").await.unwrap(), (200, "ok".into()));
    let mut c = RawClient::connect(addr, "/ws?id=m").await.unwrap();
    c.send_text(r#"{"event":"echo","payload":"hi","callbackId":"1"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"1","payload":"hi"}"#)
    );
    assert_eq!(server.to("m").emit("x", &1).unwrap(), 1);
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"event":"x","payload":1}"#)
    );
    // A plain GET of the WebSocket route is told to upgrade; other paths are the app's.
    assert_eq!(http_get(addr, "/ws").await.unwrap().0, 426);
    assert!(matches!(
        RawClient::connect(addr, "/elsewhere?id=n").await,
        Err(ConnectError::Http(404))
    ));
    // HTTP keeps working while the socket is open.
    assert_eq!(http_get(addr, "/health").await.unwrap().0, 200);
    assert_eq!(server.connection_count(), 1);
}

/// The seed's "noServer" mode: the application authenticates the upgrade request itself.
async fn authenticate(State(server): State<Server>, upgrade: WsUpgrade) -> Response {
    let params = upgrade.params(&server);
    match (params.get("token"), params.get("id")) {
        (Some("good"), Some(id)) => {
            let id = id.to_string();
            upgrade.bind(id).accept(&server)
        }
        _ => (StatusCode::UNAUTHORIZED, "bad token").into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_authenticates_before_the_upgrade() {
    let server = Server::new(ServerConfig::default()).unwrap();
    let (tx, mut connections) = mpsc::unbounded_channel();
    server.on_system(move |_: Connection, socket: Socket| {
        // The upgrade's binding came first: the id is bound when the connection event fires.
        let _ = tx.send(socket.id());
    });
    server.on("whoami", |socket: Socket| Ack(socket.id()));
    let app = Router::new()
        .route("/app", get(authenticate))
        .with_state(server.clone());
    let addr = serve(app).await;

    // Refused before the upgrade: the handshake fails with HTTP 401.
    match tokio_tungstenite::connect_async(format!("ws://{addr}/app?token=bad&id=u")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!(
            "expected HTTP 401, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert!(matches!(
        RawClient::connect(addr, "/app?id=u").await,
        Err(ConnectError::Http(401))
    ));
    assert_eq!(server.stats().connections_total, 0);

    let mut c = RawClient::connect(addr, "/app?token=good&id=u")
        .await
        .unwrap();
    assert_eq!(
        recv_within(&mut connections, TIMEOUT).await,
        Some(Some("u".to_string()))
    );
    c.send_text(r#"{"event":"whoami","callbackId":"1"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"1","payload":"u"}"#)
    );
    assert_eq!(server.to("u").emit("x", "y").unwrap(), 1);
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"event":"x","payload":"y"}"#)
    );
    assert_eq!(server.stats().connections_total, 1);
}

//! The HTTP side of `crosswire serve`, on the same port as the WebSockets:
//!
//! - `POST /api/emit` — publish to a room, an id, a list of ids or everyone, cluster-wide,
//!   for backends in any language. Protected by a bearer token; with no token configured the
//!   API is off (404).
//! - `GET /metrics` — the node's counters for Prometheus (OpenMetrics text;
//!   `crosswire::metrics`).
//! - `GET /healthz` — node name, connections, live nodes and broker health (503 while the
//!   broker is unhealthy, or while another live node uses this node's name).
//! - `GET /admin` — the operator's dashboard, and `/admin/ws` its WebSocket
//!   ([`crate::admin`]); both off (404) unless an admin token is set.
//! - `GET /` — the demo page (when built in); any other path upgrades to a WebSocket.
//!
//! ```text
//! curl -X POST http://127.0.0.1:9000/api/emit \
//!   -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \
//!   -d '{"room": "lobby", "event": "msg", "data": {"text": "hello"}}'
//! ```

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crosswire::{RawValue, Server, UpgradeRejection, WsUpgrade};
use serde::Deserialize;
use serde_json::json;

/// Settings of the HTTP routes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Bearer token of `POST /api/emit`; `None` turns the API off.
    pub api_token: Option<String>,
    /// HTML served at `GET /`; `None` serves nothing there.
    pub demo_page: Option<&'static str>,
    /// The admin dashboard (`GET /admin`, `/admin/ws`); `None` turns it off (404).
    pub admin: Option<crate::admin::Admin>,
}

impl HttpOptions {
    /// No API, no demo page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables `POST /api/emit` with this bearer token.
    pub fn with_api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = Some(token.into());
        self
    }

    /// Serves this page at `GET /`.
    pub fn with_demo_page(mut self, html: &'static str) -> Self {
        self.demo_page = Some(html);
        self
    }

    /// Serves the admin dashboard at `GET /admin`, its sockets at `/admin/ws`.
    pub fn with_admin(mut self, admin: crate::admin::Admin) -> Self {
        self.admin = Some(admin);
        self
    }
}

#[derive(Clone)]
struct AppState {
    server: Server,
    options: Arc<HttpOptions>,
}

/// The router of `crosswire serve`: the HTTP routes above, and WebSocket upgrades on every
/// path (seed clients connect to `ws://host:port/?id=…`).
pub fn router(server: Server, options: HttpOptions) -> Router {
    let state = AppState {
        server,
        options: Arc::new(options),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", state.server.metrics_handler())
        .route("/api/emit", post(emit))
        .route("/admin/ws", get(admin_ws))
        .fallback(fallback)
        .with_state(state)
}

async fn fallback(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WsUpgrade, UpgradeRejection>,
    uri: axum::http::Uri,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade.accept(&state.server),
        Err(rejection) => {
            let wants_upgrade = headers.contains_key(header::UPGRADE);
            if uri.path() == "/admin" && !wants_upgrade {
                return admin_page(&state.options);
            }
            match (state.options.demo_page, uri.path(), wants_upgrade) {
                (Some(html), "/" | "/index.html", false) => Html(html).into_response(),
                (Some(_), "/crosswire.mjs", false) => (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    crate::demo::CLIENT_MODULE,
                )
                    .into_response(),
                (_, _, true) => rejection.into_response(),
                _ => (
                    StatusCode::NOT_FOUND,
                    "not found; WebSocket clients connect with an upgrade request\n",
                )
                    .into_response(),
            }
        }
    }
}

/// `GET /admin`: the dashboard, or 404 when it is off.
fn admin_page(options: &HttpOptions) -> Response {
    match options.admin {
        Some(_) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            Html(crate::admin::PAGE),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, crate::admin::OFF_MESSAGE).into_response(),
    }
}

/// `/admin/ws`: the dashboard's WebSocket, into the admin server (never the application's);
/// 404 when the dashboard is off, 401 without the right token.
async fn admin_ws(
    State(state): State<AppState>,
    upgrade: Result<WsUpgrade, UpgradeRejection>,
) -> Response {
    let Some(admin) = &state.options.admin else {
        return (StatusCode::NOT_FOUND, crate::admin::OFF_MESSAGE).into_response();
    };
    match upgrade {
        Ok(upgrade) => admin.accept(upgrade),
        Err(rejection) => rejection.into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let server = &state.server;
    let broker = server.broker_health();
    let name_conflict = server.node_name_conflict();
    let healthy = broker.is_none_or(|b| b.healthy) && !name_conflict;
    let body = json!({
        "node": server.node_name(),
        "name_conflict": name_conflict,
        "connections": server.connection_count(),
        "nodes": server.nodes(),
        "broker": broker.map(|b| json!({
            "healthy": b.healthy,
            "healthy_publishers": b.healthy_publishers,
            "healthy_subscribers": b.healthy_subscribers,
            "total": b.total,
        })),
        "stats": server.stats(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Body of `POST /api/emit`: exactly one target (`room`, `id`, `ids` or `all: true`), the
/// event name, and the data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody<'a> {
    event: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    room: Option<String>,
    /// Namespace of `room`. Default: `relay` (the relay's rooms).
    namespace: Option<String>,
    id: Option<String>,
    ids: Option<Vec<String>>,
    all: Option<bool>,
    /// Ids to leave out (room sends only).
    #[serde(default)]
    except: Vec<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "ok": false, "error": message.into() })),
    )
        .into_response()
}

async fn emit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = state.options.api_token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "the HTTP API is off; start the server with --api-token or CROSSWIRE_API_TOKEN",
        );
    };
    match crate::token::bearer(&headers) {
        Some(given) if crate::token::same_token(given.as_bytes(), token.as_bytes()) => {}
        Some(_) => return error(StatusCode::UNAUTHORIZED, "invalid bearer token"),
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing 'Authorization: Bearer <token>' header",
            )
        }
    }
    let body: EmitBody<'_> = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    if body.event.is_empty() {
        return error(StatusCode::BAD_REQUEST, "event must not be empty");
    }
    let targets = usize::from(body.room.is_some())
        + usize::from(body.id.is_some())
        + usize::from(body.ids.is_some())
        + usize::from(body.all == Some(true));
    if targets != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "name exactly one target: room, id, ids or all: true",
        );
    }
    let data = body.data.unwrap_or(RawValue::NULL);
    let server = &state.server;
    let sent = if let Some(room) = body.room {
        let namespace = body
            .namespace
            .unwrap_or_else(|| crate::relay::NAMESPACE.to_string());
        server
            .to_room(crosswire::Room::new(namespace, room))
            .except(body.except)
            .emit_raw(&body.event, data)
    } else if let Some(id) = body.id {
        server.to(id).emit_raw(&body.event, data)
    } else if let Some(ids) = body.ids {
        server.to_ids(ids).emit_raw(&body.event, data)
    } else {
        server.to_all().emit_raw(&body.event, data)
    };
    match sent {
        Ok(local) => Json(json!({ "ok": true, "local_deliveries": local })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

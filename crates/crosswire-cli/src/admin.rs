//! The operator's dashboard of `crosswire serve` (`GET /admin`), on only when an admin token
//! is given (`--admin-token` or `CROSSWIRE_ADMIN_TOKEN`).
//!
//! The page shows the whole cluster: every live node with its connections, message rates and
//! broker health, the busiest rooms (sizes summed over the nodes), a look-up of an id (its
//! node, rooms and counters) with a button that disconnects it, and a small rate chart per
//! node. It is dependency-free HTML and JavaScript, and talks to the server over a crosswire
//! WebSocket with the project's own JavaScript client (`GET /crosswire.mjs`).
//!
//! Admin sockets never mix with the application's: they belong to a second
//! [`crosswire::Server`] of their own (one node, no broker), mounted at `/admin/ws`, whose
//! upgrade checks the token before the 101 (missing or wrong: 401). A browser cannot set
//! headers on a WebSocket, so the page passes the token as `?token=…` (it reads it from the
//! URL fragment, `/admin#token=…`, which never reaches the server, or from a form); other
//! clients may send `Authorization: Bearer <token>` instead. The admin server's handlers
//! hold the main server and answer from its cluster-wide inspection queries:
//!
//! - `admin:hello` → `{"node": <the node serving the page>}`;
//! - `admin:overview` → every live node's [`crosswire::NodeSummary`]
//!   ([`Server::cluster_summary`]), also pushed to every admin socket once per second while
//!   at least one is connected;
//! - `admin:inspect {"id"}` → where the id is connected ([`crosswire::Located`], or `null`);
//! - `admin:disconnect {"id"}` → closes the id's socket, wherever it is, with
//!   [`DISCONNECT_CODE`]; answers whether a node had it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crosswire::{Ack, ConfigError, Data, Server, ServerConfig, State, WsUpgrade};
use serde::Deserialize;

/// The page.
pub const PAGE: &str = include_str!("../assets/admin.html");

/// How often the overview is pushed to the admin sockets.
pub const PUSH_EVERY: Duration = Duration::from_secs(1);

/// How many of each node's largest rooms an overview lists.
pub const TOP_ROOMS: usize = 10;

/// The close code of a socket disconnected from the dashboard.
pub const DISCONNECT_CODE: u16 = 4000;

/// The close reason of a socket disconnected from the dashboard.
pub const DISCONNECT_REASON: &str = "disconnected by an operator";

/// The event that carries an overview, pushed and asked for.
pub const OVERVIEW_EVENT: &str = "admin:overview";

/// What `GET /admin` and `/admin/ws` answer when no admin token is set.
pub const OFF_MESSAGE: &str =
    "admin dashboard is off; start the server with --admin-token or CROSSWIRE_ADMIN_TOKEN\n";

/// The main server, as the admin server's handlers take it.
#[derive(Clone)]
struct Main(Server);

#[derive(Deserialize)]
struct Id {
    id: String,
}

/// The dashboard's side of a node: its own server for the admin sockets, the token that
/// opens it, and the task that pushes overviews. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    server: Server,
    token: Arc<str>,
    pusher: Arc<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("connections", &self.server.connection_count())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin server for `main`, opened by `token`, with its handlers installed and its
    /// overview pushes started. Must be called inside a tokio runtime.
    pub fn new(main: &Server, token: impl Into<String>) -> Result<Self, ConfigError> {
        let config = ServerConfig::default().with_node_name(format!("{}-admin", main.node_name()));
        let server = Server::builder(config).state(Main(main.clone())).build()?;
        install(&server);
        let pusher = tokio::spawn(push_overviews(server.clone(), main.clone()));
        Ok(Self {
            server,
            token: token.into().into(),
            pusher: Arc::new(pusher.abort_handle()),
        })
    }

    /// The admin server (its sockets are the dashboard's, never the application's).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Whether `given` is the admin token (compared in constant time).
    pub fn authorized(&self, given: &str) -> bool {
        crate::token::same_token(given.as_bytes(), self.token.as_bytes())
    }

    /// Takes an upgrade to `/admin/ws` in: with the token (`?token=` or
    /// `Authorization: Bearer`) into the admin server, else 401 and nothing upgraded.
    pub fn accept(&self, upgrade: WsUpgrade) -> Response {
        let from_header = crate::token::bearer(upgrade.headers()).map(str::to_string);
        let given = from_header.or_else(|| {
            upgrade
                .params(&self.server)
                .get("token")
                .map(str::to_string)
        });
        match given {
            Some(given) if self.authorized(&given) => upgrade.accept(&self.server),
            Some(_) => (StatusCode::UNAUTHORIZED, "invalid admin token\n").into_response(),
            None => (
                StatusCode::UNAUTHORIZED,
                "admin token required: /admin/ws?token=<token>\n",
            )
                .into_response(),
        }
    }

    /// Stops the overview pushes and closes the admin sockets.
    pub async fn shutdown(&self) {
        self.pusher.abort();
        self.server.shutdown().await;
    }
}

/// Installs the `admin:` events on the admin server.
fn install(server: &Server) {
    server.on("admin:hello", |State(Main(main)): State<Main>| {
        Ack(serde_json::json!({ "node": main.node_name() }))
    });
    server.on(
        OVERVIEW_EVENT,
        |State(Main(main)): State<Main>| async move { Ack(main.cluster_summary(TOP_ROOMS).await) },
    );
    server.on(
        "admin:inspect",
        |State(Main(main)): State<Main>, Data(Id { id }): Data<Id>| async move {
            Ack(main.inspect(&id).await)
        },
    );
    server.on(
        "admin:disconnect",
        |State(Main(main)): State<Main>, Data(Id { id }): Data<Id>| async move {
            let found = main
                .disconnect(&id, DISCONNECT_CODE, DISCONNECT_REASON)
                .await;
            if found {
                tracing::info!(%id, "socket disconnected from the admin dashboard");
            }
            Ack(found)
        },
    );
}

/// Pushes the cluster's overview to every admin socket once per [`PUSH_EVERY`], while at
/// least one is connected.
async fn push_overviews(admin: Server, main: Server) {
    let mut tick = tokio::time::interval(PUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if admin.connection_count() == 0 {
            continue;
        }
        let overview = main.cluster_summary(TOP_ROOMS).await;
        if let Err(e) = admin.to_all().emit(OVERVIEW_EVENT, &overview) {
            tracing::debug!(error = %e, "admin overview not pushed");
        }
    }
}

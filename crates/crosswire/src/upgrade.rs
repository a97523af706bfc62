//! Taking WebSocket upgrades in through hyper/axum.
//!
//! Three ways in, one path: [`crate::Server::listen`] (own port, every path), a route mounted
//! in an existing axum `Router` ([`crate::Server::ws_handler`]), or the application's own
//! handler that authenticates first and then accepts ([`WsUpgrade`], the seed's "noServer"
//! mode). After the 101 response the connection is taken out of hyper and served by
//! crosswire's own codec: a plain `TcpStream` on the zero-copy path, any other stream (TLS,
//! a Unix socket, an in-memory duplex) through the socket's own task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::compression::Deflate;
use crate::limits::{origin_allowed, Admitted};
use crate::node::Server;
use crate::params::{ParseOptions, RequestParams};
use crate::socket::{Batch, Io, Socket, SocketShared, Transport};
use crate::system;
use crosswire_protocol::ws;

/// A WebSocket upgrade request, as an axum extractor. Authenticate first (from
/// [`WsUpgrade::params`] or [`WsUpgrade::headers`]), put what you learnt on the socket-to-be
/// ([`WsUpgrade::insert_extension`], [`WsUpgrade::bind`]), then [`WsUpgrade::accept`] — or
/// return an error response such as 401 and the socket never opens.
///
/// ```
/// use axum::extract::State;
/// use axum::response::{IntoResponse, Response};
/// use crosswire::{Server, WsUpgrade};
///
/// #[derive(Clone)]
/// struct User { id: String }
///
/// async fn ws(upgrade: WsUpgrade, State(server): State<Server>) -> Response {
///     let Some(token) = upgrade.params(&server).get("token").map(str::to_string) else {
///         return (http::StatusCode::UNAUTHORIZED, "token required").into_response();
///     };
///     let user = User { id: token }; // look the token up here
///     upgrade.bind(user.id.clone()).with_extension(user).accept(&server)
/// }
/// ```
pub struct WsUpgrade {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
    target: String,
    headers: HeaderMap,
    extensions: http::Extensions,
    bind: Option<String>,
    /// The peer's address, when the server in front put it in the request (axum's
    /// `ConnectInfo`): a stream other than plain TCP cannot be asked.
    remote: Option<SocketAddr>,
    /// The subprotocol chosen with [`WsUpgrade::with_protocol`].
    protocol: Option<String>,
}

/// What an accepted upgrade hands to the new socket.
pub(crate) struct Accepted {
    pub(crate) params: RequestParams,
    pub(crate) headers: HeaderMap,
    pub(crate) extensions: http::Extensions,
    pub(crate) bind: Option<String>,
    /// The connection's slot under the node's maximum, held until it ends.
    pub(crate) admitted: Admitted,
    pub(crate) remote: Option<SocketAddr>,
    /// What the 101 agreed on besides the upgrade itself.
    pub(crate) negotiated: Negotiated,
}

/// What an upgrade negotiated: the subprotocol and permessage-deflate.
pub(crate) struct Negotiated {
    pub(crate) protocol: Option<Box<str>>,
    pub(crate) deflate: Option<Deflate>,
}

/// An upgraded connection, as crosswire serves it.
pub(crate) enum Stream {
    /// Plain TCP: crosswire's zero-copy path.
    Tcp(TcpStream, BytesMut),
    /// Anything else (TLS, a Unix socket, …), driven by the socket's task.
    Other(Pin<Box<dyn Io>>),
}

impl Stream {
    /// Takes the stream out of hyper: the `TcpStream` itself when it is one (under
    /// hyper-util's auto builder, as `axum::serve` uses, or hyper's own HTTP/1 server), else
    /// hyper's upgraded stream as it is.
    fn from_upgraded(upgraded: hyper::upgrade::Upgraded) -> Self {
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => Self::Tcp(parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => Self::Tcp(parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
                Err(upgraded) => Self::Other(Box::pin(TokioIo::new(upgraded))),
            },
        }
    }
}

impl std::fmt::Debug for WsUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsUpgrade")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeRejection {
    /// Not a GET request.
    #[error("WebSocket upgrades must use GET")]
    Method,
    /// `Connection: upgrade` / `Upgrade: websocket` missing.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (13 required)")]
    Version,
    /// `Sec-WebSocket-Key` missing.
    #[error("missing Sec-WebSocket-Key")]
    Key,
    /// The connection cannot be upgraded (HTTP/2 or a server without upgrade support).
    #[error("connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotUpgrade | Self::Version => StatusCode::UPGRADE_REQUIRED,
            Self::Key | Self::NotUpgradable => StatusCode::BAD_REQUEST,
        };
        let mut res = (status, self.to_string()).into_response();
        if matches!(self, Self::NotUpgrade | Self::Version) {
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            res.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        res
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::Method);
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(UpgradeRejection::NotUpgrade);
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(UpgradeRejection::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::Key)?;
        let accept = HeaderValue::from_str(&ws::accept_key(key.as_bytes()))
            .map_err(|_| UpgradeRejection::Key)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
        Ok(Self {
            on_upgrade,
            accept,
            target,
            headers: parts.headers.clone(),
            extensions: http::Extensions::new(),
            bind: None,
            remote: parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
            protocol: None,
        })
    }
}

/// The subprotocols a request offers (`Sec-WebSocket-Protocol`), in its order.
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

impl WsUpgrade {
    /// The path and query parameters, parsed with the server's options.
    pub fn params(&self, server: &Server) -> RequestParams {
        RequestParams::parse(&self.target, parse_options(server))
    }

    /// The raw request target (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The request headers (cookies, `Origin`, `Authorization`, …).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Stores a typed value on the socket-to-be (e.g. the authenticated user); handlers read
    /// it as [`crate::Extension<T>`]. Returns the previous value of that type.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.extensions.insert(value)
    }

    /// [`WsUpgrade::insert_extension`], by value.
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Binds the socket to `id` as soon as it opens, before the `connection` event (see
    /// [`Server::bind`]).
    pub fn bind(mut self, id: impl Into<String>) -> Self {
        self.bind = Some(id.into());
        self
    }

    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in its order of
    /// preference.
    pub fn protocols(&self) -> Vec<&str> {
        offered_protocols(&self.headers).collect()
    }

    /// Chooses the subprotocol to answer with, instead of the server's
    /// [`crate::ServerConfig::with_subprotocols`] choice; ignored unless the client offered
    /// it (the 101 may only name an offered one).
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// The subprotocol the 101 will name: the one chosen with [`WsUpgrade::with_protocol`]
    /// if the client offered it, else the first of the server's list that it offered.
    fn negotiate(&self, supported: &[String]) -> Option<String> {
        let offered: Vec<&str> = offered_protocols(&self.headers).collect();
        match &self.protocol {
            Some(chosen) => offered.contains(&chosen.as_str()).then(|| chosen.clone()),
            None => supported
                .iter()
                .find(|s| offered.contains(&s.as_str()))
                .cloned(),
        }
    }

    /// Accepts the connection into `server`: answers 101, then the socket opens with the
    /// extensions and binding set here, and the [`crate::system::Connection`] event fires.
    pub fn accept(self, server: &Server) -> Response {
        let server = server.clone();
        let admitted = match admit(&server, &self.headers) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal.into_response(),
        };
        let protocol = self.negotiate(&server.config().subprotocols);
        let protocol_header = protocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok());
        let offers = self
            .headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (deflate, extensions_header) =
            match Deflate::negotiate(server.config().permessage_deflate.as_ref(), offers) {
                Some((deflate, response)) => (Some(deflate), HeaderValue::from_str(&response).ok()),
                None => (None, None),
            };
        let accepted = Accepted {
            negotiated: Negotiated {
                protocol: protocol.map(String::into_boxed_str),
                deflate,
            },
            params: RequestParams::parse(&self.target, parse_options(&server)),
            headers: self.headers,
            extensions: self.extensions,
            bind: self.bind,
            admitted,
            remote: self.remote,
        };
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            server.adopt(Stream::from_upgraded(upgraded), accepted);
        });
        let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(protocol) = protocol_header {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(extensions) = extensions_header {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        res
    }
}

/// Why an upgrade was refused before the 101.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    ShuttingDown,
    Origin,
    Capacity,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Self::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Self::Capacity => (StatusCode::SERVICE_UNAVAILABLE, "too many connections"),
        }
        .into_response()
    }
}

/// Checks an upgrade against the node's limits before the 101: shutting down (503), an
/// `Origin` not allowed (403), the maximum of connections reached (503).
fn admit(server: &Server, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    if server.is_shutting_down() {
        return Err(Refusal::ShuttingDown);
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if !origin_allowed(origin, &server.config().allowed_origins) {
        server
            .inner
            .stats
            .refused_origin
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = origin.unwrap_or(""),
            "upgrade refused: origin not allowed"
        );
        return Err(Refusal::Origin);
    }
    server.inner.admission.admit().ok_or(Refusal::Capacity)
}

fn parse_options(server: &Server) -> ParseOptions {
    let c = server.config();
    ParseOptions {
        lowercase_keys: c.lowercase_param_keys,
        strip_leading_slash: c.strip_leading_slash,
    }
}

impl Server {
    /// Takes a freshly upgraded connection in. Used by the upgrade paths.
    pub(crate) fn adopt(&self, stream: Stream, accepted: Accepted) {
        if self.is_shutting_down() {
            return;
        }
        let Accepted {
            params,
            headers,
            extensions,
            bind,
            admitted,
            remote,
            negotiated,
        } = accepted;
        let (transport, remote, leftover, io) = match stream {
            Stream::Tcp(tcp, leftover) => {
                let _ = tcp.set_nodelay(true);
                let remote = tcp.peer_addr().ok().or(remote);
                (Transport::Tcp(tcp), remote, leftover, None)
            }
            Stream::Other(io) => (Transport::Task, remote, BytesMut::new(), Some(io)),
        };
        let socket = self.open_socket(transport, remote, params, &headers, extensions, negotiated);
        // Bind and announce before the connection task starts, so the socket is reachable by
        // its id as early as possible after the 101 response.
        {
            let _batch = Batch::begin();
            if let Some(id) = bind {
                self.bind(&id, &socket);
            }
            let headers = Arc::new(headers);
            self.emit_system(&system::Connection { headers }, Some(&socket));
        }
        socket
            .shared
            .retain_headers(&self.inner.config.header_retention);
        if let Some(after) = self.inner.config.unbound_timeout {
            self.close_if_unbound(&socket, after);
        }
        let server = self.clone();
        tokio::spawn(crate::connection::run(
            server, socket, leftover, admitted, io,
        ));
    }

    /// A registered socket for an upgraded stream.
    fn open_socket(
        &self,
        transport: Transport,
        remote: Option<SocketAddr>,
        params: RequestParams,
        headers: &HeaderMap,
        extensions: http::Extensions,
        negotiated: Negotiated,
    ) -> Socket {
        let conn_id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        if negotiated.deflate.is_some() {
            self.inner
                .stats
                .deflate_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        let client_ip =
            crate::handshake::client_ip(remote, headers, &self.inner.config.trusted_proxies);
        let shared = Arc::new(SocketShared::new(
            conn_id,
            transport,
            crate::socket::Identity {
                params,
                remote,
                client_ip,
                headers: crate::handshake::HeaderBlock::new(headers),
                extensions,
                protocol: negotiated.protocol,
                deflate: negotiated.deflate,
            },
            Arc::downgrade(&self.inner) as Weak<dyn crate::socket::SocketHost>,
            self.inner.config.max_queue_bytes,
            self.inner.config.slow_client_policy,
        ));
        self.write_registry().insert_conn(Arc::clone(&shared));
        self.inner
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Socket { shared }
    }

    /// Closes `socket` with 1008 if it was never bound to an id `after` it opened.
    fn close_if_unbound(&self, socket: &Socket, after: Duration) {
        if socket.shared.was_bound() {
            return;
        }
        let shared = Arc::downgrade(&socket.shared);
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let (Some(shared), Some(inner)) = (shared.upgrade(), inner.upgrade()) else {
                return;
            };
            if !shared.was_bound() && !shared.is_closed() {
                inner.stats.unbound_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(conn = shared.conn_id, "not bound in time, closing");
                shared.request_close(crate::close_code::POLICY_VIOLATION, "not bound in time");
            }
        });
    }

    /// A handler for an axum route that accepts WebSocket upgrades into this server, e.g.
    /// `Router::new().route("/ws", server.ws_handler())`.
    pub fn ws_handler<S>(&self) -> axum::routing::MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let server = self.clone();
        axum::routing::get(move |upgrade: WsUpgrade| {
            let server = server.clone();
            async move { upgrade.accept(&server) }
        })
    }

    /// A router that accepts WebSocket upgrades on every path (what [`Server::listen`]
    /// serves).
    pub fn router(&self) -> axum::Router {
        let server = self.clone();
        axum::Router::new().fallback(move |upgrade: Result<WsUpgrade, UpgradeRejection>| {
            let server = server.clone();
            async move {
                match upgrade {
                    Ok(u) => u.accept(&server),
                    Err(e) => e.into_response(),
                }
            }
        })
    }
}

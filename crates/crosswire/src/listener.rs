//! The accept loop of [`crate::Server::serve_router`]: hyper serving the router on each
//! accepted connection, with a deadline for the request head (so silent and slow clients
//! cannot hold descriptors), and a bounded back-off when accepting fails (the process at its
//! file limit), logged once per burst instead of once per attempt.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::node::ServerInner;
use crate::tls::Tls;

/// Wait before accepting again after an accept error other than a failed handshake.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Quiet time between two log lines about accept errors.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` is cancelled; then asks every HTTP
/// connection still open to finish (upgraded sockets are the server's own business).
pub(crate) async fn accept_loop(
    inner: &Arc<ServerInner>,
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let service = WithPeer {
                    router: router.clone(),
                    peer,
                };
                let conn = Conn {
                    inner: Arc::downgrade(inner),
                    timeout: inner.config.handshake_timeout,
                    stop: stop.clone(),
                };
                match &tls {
                    None => conn.spawn(stream, service),
                    Some(tls) => conn.spawn_tls(stream, service, tls.acceptor().clone()),
                }
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                inner.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                errors.log(&e);
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// What serving one connection needs.
struct Conn {
    inner: Weak<ServerInner>,
    timeout: Duration,
    stop: CancellationToken,
}

impl Conn {
    /// Serves one plain connection in its own task.
    fn spawn(self, stream: TcpStream, service: WithPeer) {
        tokio::spawn(self.serve(stream, service));
    }

    /// Serves one TLS connection in its own task: the TLS handshake, then HTTP, within
    /// the same head deadline.
    fn spawn_tls(self, stream: TcpStream, service: WithPeer, acceptor: TlsAcceptor) {
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let stream = match tokio::time::timeout(self.timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    self.count(|stats| &stats.tls_failures);
                    return tracing::debug!(error = %e, "TLS handshake failed");
                }
                Err(_) => return self.count(|stats| &stats.handshake_timeouts),
            };
            let left = self.timeout.saturating_sub(started.elapsed());
            Conn {
                timeout: left.max(Duration::from_millis(1)),
                ..self
            }
            .serve(stream, service)
            .await;
        });
    }

    /// Serves HTTP/1 on `io` (hyper's own server: hyper-util's version-sniffing builder
    /// would wait for the first bytes before the head deadline starts); a WebSocket upgrade
    /// hands the stream to crosswire and ends this.
    async fn serve<I>(self, io: I, service: WithPeer)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeout);
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        match result {
            Err(e) if e.is_timeout() => {
                self.count(|stats| &stats.handshake_timeouts);
                tracing::debug!("closed a connection that sent no complete request in time");
            }
            Err(e) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
            Ok(()) => {}
        }
    }

    fn count(
        &self,
        counter: impl FnOnce(&crate::stats::Counters) -> &std::sync::atomic::AtomicU64,
    ) {
        if let Some(inner) = self.inner.upgrade() {
            counter(&inner.stats).fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The router, with the peer's address put into every request (as axum's `ConnectInfo`),
/// for the sockets whose stream cannot tell it (TLS).
#[derive(Clone)]
struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
}

impl tower_service::Service<Request<Incoming>> for WithPeer {
    type Response = <axum::Router as tower_service::Service<Request<Incoming>>>::Response;
    type Error = Infallible;
    type Future = <axum::Router as tower_service::Service<Request<Incoming>>>::Future;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.router.call(request)
    }
}

/// Logs accept errors once per burst: the first at once, then a count every
/// [`ACCEPT_LOG_EVERY`] while they go on.
#[derive(Default)]
struct AcceptErrors {
    logged: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn log(&mut self, e: &io::Error) {
        self.since += 1;
        if self
            .logged
            .is_some_and(|at| at.elapsed() < ACCEPT_LOG_EVERY)
        {
            return;
        }
        tracing::error!(
            error = %e,
            errors = self.since,
            "accepting connections fails (at the process's file limit?); retrying every 100 ms"
        );
        self.logged = Some(Instant::now());
        self.since = 0;
    }
}

/// Errors about one incoming connection, not about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

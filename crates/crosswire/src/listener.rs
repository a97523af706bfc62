//! The accept loop of [`crate::Server::serve_router`]: hyper serving the router on each
//! accepted connection, with a deadline for the request head (so silent and slow clients
//! cannot hold descriptors), and a bounded back-off when accepting fails (the process at its
//! file limit), logged once per burst instead of once per attempt.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::node::ServerInner;

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
    stop: CancellationToken,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => serve_connection(inner, stream, router.clone(), stop.clone()),
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

/// Serves one HTTP connection in its own task, with the request-head deadline; a WebSocket
/// upgrade hands the stream to crosswire and ends this task.
fn serve_connection(
    inner: &Arc<ServerInner>,
    stream: TcpStream,
    router: axum::Router,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let timeout = inner.config.handshake_timeout;
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        // hyper's HTTP/1 server itself: hyper-util's version-sniffing builder would wait for
        // the first bytes before the head deadline starts.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout);
        let service = TowerToHyperService::new(router);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            if e.is_timeout() {
                if let Some(inner) = inner.upgrade() {
                    inner.stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("closed a connection that sent no complete request in time");
            } else {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
    });
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
        if self.logged.is_some_and(|at| at.elapsed() < ACCEPT_LOG_EVERY) {
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

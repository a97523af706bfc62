//! Server → client requests to an id wherever it is connected ([`Server::request`]): here
//! through the socket, elsewhere through a built-in server-to-server query answered by the
//! node that holds the id, which asks its socket and sends back the client's answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::RequestError;
use crate::handler::{erase, Ack, Data};
use crate::node::Server;
use crate::server_events::ServerEmitOptions;

const QUERY_CLIENT_REQUEST: &str = "crosswire:client-request";

/// Longest client timeout a node honours for another node's request.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a node is asked to forward to one of its sockets.
#[derive(Serialize, Deserialize)]
struct Forward {
    id: String,
    event: String,
    payload: Box<RawValue>,
    timeout_ms: u64,
}

/// How the forwarded request ended, as the holding node reports it. (Externally tagged: an
/// internally tagged enum is buffered when read, which a raw JSON value cannot be.)
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Answered { answer: Box<RawValue> },
    NotHere,
    Timeout,
    Closed,
    Failed { error: String },
}

impl Server {
    /// Sends a request to the socket bound to `id`, on whichever node it is connected, and
    /// waits for the client's answer (the `ackId` extension, as [`crate::Socket::request`]).
    ///
    /// Errors: [`RequestError::NotConnected`] when no node holds `id`,
    /// [`RequestError::Timeout`] when the client did not answer within `timeout`,
    /// [`RequestError::Closed`] when its socket closed first. A request to another node waits
    /// at most `timeout` plus the server request timeout (a node that died meanwhile).
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        id: &str,
        event: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<Box<RawValue>, RequestError> {
        if let Some(socket) = self.socket(id) {
            return socket.request(event, payload, timeout).await;
        }
        if self.inner.cluster.is_none() {
            return Err(RequestError::NotConnected);
        }
        let forward = Forward {
            id: id.to_string(),
            event: event.to_string(),
            payload: serde_json::value::to_raw_value(payload)?,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let wait = timeout + self.inner.config.server_request_timeout;
        // The node it was last seen on first; everyone else when that is stale.
        if let Some(node) = self.cached_location(id) {
            let options = ServerEmitOptions::new().to([node]).with_timeout(wait);
            if let Some(result) = self.forward(&forward, options, timeout).await {
                return result;
            }
        }
        let options = ServerEmitOptions::new().except_self().with_timeout(wait);
        self.forward(&forward, options, timeout)
            .await
            .unwrap_or(Err(RequestError::NotConnected))
    }

    /// Asks the nodes of `options` to forward; `None` when none of them holds the id.
    async fn forward(
        &self,
        forward: &Forward,
        options: ServerEmitOptions,
        timeout: Duration,
    ) -> Option<Result<Box<RawValue>, RequestError>> {
        let here = |o: &Outcome| !matches!(o, Outcome::NotHere);
        let (_, outcome) = self
            .first_reply(QUERY_CLIENT_REQUEST, forward, options, here)
            .await?;
        Some(match outcome {
            Outcome::Answered { answer } => Ok(answer),
            Outcome::Timeout => Err(RequestError::Timeout(timeout)),
            Outcome::Closed => Err(RequestError::Closed),
            Outcome::Failed { error } => Err(RequestError::Cluster(error)),
            Outcome::NotHere => return None,
        })
    }

    /// Installs the handler that forwards other nodes' requests to local sockets.
    pub(crate) fn install_client_requests(&self) {
        let forward = |server: Server, Data(f): Data<Forward>| async move {
            let Some(socket) = server.socket(&f.id) else {
                return Ack(Outcome::NotHere);
            };
            let timeout = Duration::from_millis(f.timeout_ms).min(MAX_REMOTE_TIMEOUT);
            Ack(match socket.request(&f.event, &*f.payload, timeout).await {
                Ok(answer) => Outcome::Answered { answer },
                Err(RequestError::Timeout(_)) => Outcome::Timeout,
                Err(RequestError::Closed) => Outcome::Closed,
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                },
            })
        };
        self.inner
            .server_events
            .add(QUERY_CLIENT_REQUEST, erase(forward), None, false);
    }
}

//! Server-to-server events: handlers, emitting to all or named nodes, and collecting replies
//! one by one or all at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ServerEmitError;
use crate::handler::{self, erase, Ack, Data};
use crate::node::{Context, Server};
use crate::requests::ServerReplies;
use crate::rooms::Room;
use crosswire_protocol::envelope::Body;

/// Options of [`Server::request_server`] and [`Server::emit_server`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerEmitOptions {
    /// Nodes to send to; empty means every node. Default: empty.
    pub targets: Vec<String>,
    /// Leave this node out. Default: false.
    pub except_self: bool,
    /// How long to wait for replies. Default: the server's `server_request_timeout` (5 s).
    pub timeout: Option<Duration>,
    /// How many replies to wait for. Default: the number of live target nodes (from node
    /// discovery), so a broadcast waits for exactly the nodes that are up.
    pub expected_responses: Option<usize>,
}

impl ServerEmitOptions {
    /// Default options: every node, self included.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends to these nodes only.
    pub fn to<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.targets = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Leaves this node out.
    pub fn except_self(mut self) -> Self {
        self.except_self = true;
        self
    }

    /// Sets the reply timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets how many replies to wait for.
    pub fn with_expected_responses(mut self, n: usize) -> Self {
        self.expected_responses = Some(n);
        self
    }
}

/// Calls the handlers of a server event.
pub(crate) fn dispatch(
    server: &Server,
    from: &str,
    event: &str,
    payload: Bytes,
    request: Option<u64>,
) {
    let Some(handlers) = server.inner.server_events.get(event) else {
        tracing::debug!(event, from, "no handler for server event");
        return;
    };
    let raw: &RawValue = match serde_json::from_slice(&payload) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(event, from, error = %e, "dropped a server event that is not JSON");
            return;
        }
    };
    let cx = Context::server_event(server, from, event, raw, request);
    handler::dispatch(&server.inner.server_events, &handlers, cx);
}

impl Server {
    /// Sends a server event without waiting for replies.
    pub fn emit_server<T: Serialize + ?Sized>(
        &self,
        event: &str,
        payload: &T,
        options: &ServerEmitOptions,
    ) -> Result<(), ServerEmitError> {
        let payload = Bytes::from(serde_json::to_vec(payload)?);
        self.send_server_event(event, payload, None, options);
        Ok(())
    }

    /// Sends a server event and returns its replies, to take one by one or all at once:
    ///
    /// ```no_run
    /// # async fn f(server: crosswire::Server) -> Result<(), crosswire::ServerEmitError> {
    /// use crosswire::ServerEmitOptions;
    /// let results = server
    ///     .request_server("say", &"hello", ServerEmitOptions::new().except_self())?
    ///     .collect()
    ///     .await;
    /// println!("{} replies, {} missing", results.responses.len(), results.unresponded);
    /// # Ok(()) }
    /// ```
    pub fn request_server<T: Serialize + ?Sized>(
        &self,
        event: &str,
        payload: &T,
        options: ServerEmitOptions,
    ) -> Result<ServerReplies, ServerEmitError> {
        if self.is_shutting_down() {
            return Err(ServerEmitError::ShutDown);
        }
        let payload = Bytes::from(serde_json::to_vec(payload)?);
        let me = self.node_name();
        let to_self = !options.except_self
            && (options.targets.is_empty() || options.targets.iter().any(|t| t == me));
        let remote = match &self.inner.cluster {
            None => 0,
            Some(cluster) if options.targets.is_empty() => cluster.peers().len(),
            Some(_) => options.targets.iter().filter(|t| *t != me).count(),
        };
        let expected = options
            .expected_responses
            .unwrap_or(remote + usize::from(to_self));
        let timeout = options
            .timeout
            .unwrap_or(self.inner.config.server_request_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let (id, rx) = self.inner.requests.register(expected, deadline);
        let replies = ServerReplies::new(
            id,
            rx,
            expected,
            deadline,
            Arc::downgrade(&self.inner.requests),
        );
        self.send_server_event(event, payload, Some(id), &options);
        Ok(replies)
    }

    /// Cancels a pending request: its [`ServerReplies`] ends now. Returns whether it was
    /// pending.
    pub fn cancel_server_request(&self, id: u64) -> bool {
        self.inner.requests.cancel(id)
    }

    /// The live nodes of the cluster (this one included), sorted. On a single node, just this
    /// node.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes = match &self.inner.cluster {
            Some(cluster) => cluster.peers(),
            None => Vec::new(),
        };
        nodes.push(self.node_name().to_string());
        nodes.sort();
        nodes
    }

    fn send_server_event(
        &self,
        event: &str,
        payload: Bytes,
        request: Option<u64>,
        options: &ServerEmitOptions,
    ) {
        let me = self.node_name().to_string();
        if let Some(cluster) = &self.inner.cluster {
            if options.targets.is_empty() {
                cluster.publish(
                    Arc::clone(&cluster.channels.s2s_all),
                    Body::ServerEvent {
                        event: event.to_string(),
                        payload: payload.clone(),
                        request,
                        targets: Vec::new(),
                    },
                );
            } else {
                for target in options.targets.iter().filter(|t| **t != me) {
                    cluster.publish(
                        cluster.channels.s2s_node(target),
                        Body::ServerEvent {
                            event: event.to_string(),
                            payload: payload.clone(),
                            request,
                            targets: vec![target.clone()],
                        },
                    );
                }
            }
        }
        let to_self =
            !options.except_self && (options.targets.is_empty() || options.targets.contains(&me));
        if to_self {
            // In-process, without the broker.
            dispatch(self, &me, event, payload, request);
        }
    }

    // ----- cluster-wide queries -----

    /// Members of a room on every node (best effort within the server request timeout).
    pub async fn cluster_room_members(&self, room: &Room) -> Vec<String> {
        let mut all: Vec<String> = self
            .query::<Vec<String>>(QUERY_ROOM_MEMBERS, room)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Number of members of a room on every node.
    pub async fn cluster_room_size(&self, room: &Room) -> usize {
        self.cluster_room_members(room).await.len()
    }

    /// Connections on every node.
    pub async fn cluster_connection_count(&self) -> usize {
        self.query::<usize>(QUERY_CONNECTIONS, &())
            .await
            .into_iter()
            .sum()
    }

    /// Where `id` is connected as far as this node knows without asking: this node when bound
    /// here, else the node whose bind announcement it last saw. Unicasts to an id with a known
    /// location are published to that node only.
    pub fn cached_location(&self, id: &str) -> Option<String> {
        if self.socket(id).is_some() {
            return Some(self.node_name().to_string());
        }
        self.inner
            .cluster
            .as_ref()
            .and_then(|c| c.location(id))
            .map(|n| n.to_string())
    }

    /// The node `id` is connected to, if any (asks every node).
    pub async fn locate(&self, id: &str) -> Option<String> {
        if self.socket(id).is_some() {
            return Some(self.node_name().to_string());
        }
        let options = ServerEmitOptions::new().except_self();
        self.first_reply(QUERY_LOCATE, &id, options, |here: &bool| *here)
            .await
            .map(|(node, _)| node)
    }

    /// Asks the nodes of `options` and returns the first reply that parses as `R` and
    /// passes `wanted`, with the node that sent it; `None` when none does within the
    /// request's timeout. (Replies that do not parse are skipped.)
    pub(crate) async fn first_reply<R: serde::de::DeserializeOwned>(
        &self,
        event: &str,
        args: &(impl Serialize + ?Sized),
        options: ServerEmitOptions,
        wanted: impl Fn(&R) -> bool,
    ) -> Option<(String, R)> {
        let mut replies = self.request_server(event, args, options).ok()?;
        while let Some(reply) = replies.next().await {
            match serde_json::from_str::<R>(reply.payload.get()) {
                Ok(answer) if wanted(&answer) => return Some((reply.node, answer)),
                _ => {}
            }
        }
        None
    }

    async fn query<R: serde::de::DeserializeOwned>(
        &self,
        event: &str,
        args: &impl Serialize,
    ) -> Vec<R> {
        let Ok(replies) = self.request_server(event, args, ServerEmitOptions::new()) else {
            return Vec::new();
        };
        replies
            .collect()
            .await
            .responses
            .values()
            .filter_map(|raw| serde_json::from_str(raw.get()).ok())
            .collect()
    }

    /// Installs the handlers of the built-in cluster queries.
    pub(crate) fn install_queries(&self) {
        let table = &self.inner.server_events;
        let members = |server: Server, Data(room): Data<Room>| Ack(server.room_members(&room));
        table.add(QUERY_ROOM_MEMBERS, erase(members), None, false);
        let connections = |server: Server| Ack(server.connection_count());
        table.add(QUERY_CONNECTIONS, erase(connections), None, false);
        let locate = |server: Server, Data(id): Data<String>| Ack(server.socket(&id).is_some());
        table.add(QUERY_LOCATE, erase(locate), None, false);
    }
}

const QUERY_ROOM_MEMBERS: &str = "crosswire:room-members";
const QUERY_CONNECTIONS: &str = "crosswire:connections";
const QUERY_LOCATE: &str = "crosswire:locate";

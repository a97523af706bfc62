//! Error types, one per kind of operation.

/// A [`crate::ServerConfig`] that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node name is empty; give every node a unique name.
    #[error("node name must not be empty")]
    EmptyNodeName,
    /// The WebSocket and server-to-server channel prefixes are equal or one starts with the
    /// other, so their channels could collide; choose distinct prefixes.
    #[error("channel prefixes must differ and neither may start with the other: ws={ws:?}, server={server:?}")]
    ChannelPrefixes {
        /// WebSocket channel prefix.
        ws: String,
        /// Server-to-server channel prefix.
        server: String,
    },
    /// A setting is out of range; the message names it.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// History is configured ([`crate::ServerConfig::with_history`],
    /// [`crate::ServerConfig::with_id_history`]) but the broker keeps none
    /// ([`crate::Broker::supports_history`]); use a broker that does, or no history.
    #[error("history is configured but this broker keeps no history")]
    HistoryUnsupported,
    /// History is configured, but this broker keeps history only with one channel per room
    /// and none per id ([`crate::Broker::history_needs_room_channels`]: a Redis Cluster):
    /// add [`crate::ServerConfig::with_room_channels`] and drop
    /// [`crate::ServerConfig::with_id_history`].
    #[error(
        "this broker keeps history only with one channel per room (with_room_channels) and \
         none per id (no with_id_history)"
    )]
    HistoryNeedsRoomChannels,
}

/// A join the broker did not confirm ([`crate::Server::join_confirmed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The broker refused the room's subscription or did not confirm it within 10 s (it is
    /// down or slow, or the node is shutting down). The id is in the room all the same;
    /// messages from other nodes reach it once the broker is back and the subscription made.
    #[error("joined, but the broker did not confirm the room's subscription")]
    Unconfirmed,
}

/// Sending to sockets failed before anything was delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The payload could not be serialised to JSON; fix the payload type.
    #[error("payload is not serialisable: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The server is shutting down; nothing was sent.
    #[error("server is shut down")]
    ShutDown,
}

/// A message to one socket was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The socket is closed or closing.
    #[error("socket is closed")]
    Closed,
    /// The socket's queue is full; by [`crate::SlowClientPolicy`] the message was dropped or
    /// the socket disconnected.
    #[error("socket send queue is full")]
    QueueFull,
    /// The payload could not be serialised to JSON; fix the payload type.
    #[error("payload is not serialisable")]
    Encode,
}

/// A server → client request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The payload could not be serialised.
    #[error("payload is not serialisable: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The request could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
    /// No answer within the timeout. Old clients never answer: they only see the event.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The socket closed before answering.
    #[error("socket closed before answering")]
    Closed,
    /// No node holds a socket bound to the id ([`crate::Server::request`]).
    #[error("id not connected on any node")]
    NotConnected,
    /// The request could not be carried between nodes; the text says why.
    #[error("request between nodes failed: {0}")]
    Cluster(String),
}

/// Listening or serving failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Could not bind or accept.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// A server-to-server event could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerEmitError {
    /// The payload could not be serialised to JSON.
    #[error("payload is not serialisable: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The node is shutting down.
    #[error("server is shut down")]
    ShutDown,
}

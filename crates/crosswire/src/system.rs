//! System events: what happens to sockets, the listener and the cluster.
//!
//! Each kind is a type; a handler registered with [`crate::Server::on_system`] takes the
//! event as its first argument, and that type selects the events it gets. The other
//! arguments are extractors, as for client events ([`crate::Socket`] for the socket the
//! event is about, [`crate::Extension`], [`crate::State`], [`crate::Server`]).
//!
//! ```
//! use crosswire::system::{Close, Connection};
//! use crosswire::{Server, ServerConfig, Socket};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crosswire::ConfigError> {
//! let server = Server::new(ServerConfig::default())?;
//! server.on_system(|_: Connection, server: Server, socket: Socket| {
//!     match socket.query("id") {
//!         Some(id) => server.bind(id, &socket),
//!         None => socket.close(4011, "Auth failure"),
//!     }
//! });
//! server.on_system(|close: Close, socket: Socket| {
//!     tracing::info!(conn = socket.conn_id(), code = close.code, "closed");
//! });
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

/// A kind of system event. Implemented by the types of this module only.
pub trait SystemEvent: Clone + Send + Sync + 'static + sealed::Sealed {
    /// The kind's name, as it appears in logs and [`crate::EventName`].
    const NAME: &'static str;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! system_events {
    ($($(#[$doc:meta])* $name:ident $body:tt = $key:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Eq)]
            #[non_exhaustive]
            pub struct $name $body

            impl sealed::Sealed for $name {}

            impl SystemEvent for $name {
                const NAME: &'static str = $key;
            }

        )*
    };
}

system_events! {
    /// A client connected (after the upgrade, with the binding and extensions that
    /// [`crate::WsUpgrade`] set). The place to authenticate from the query and
    /// [`crate::Server::bind`] an id when that was not done before the upgrade. Take the
    /// [`crate::Socket`] as an argument.
    Connection {
        /// Every header of the upgrade request, whatever
        /// [`crate::ServerConfig::with_header_retention`] keeps on the socket: an `async`
        /// handler runs after the socket dropped the headers it does not keep.
        pub headers: Arc<http::HeaderMap>,
    } = "connection";

    /// A socket closed. Its id binding and room memberships are already cleaned up.
    Close {
        /// The close code: the one the server sent when it closed first, the client's when it
        /// closed, 1006 when the connection dropped without a close frame.
        pub code: u16,
        /// The close reason.
        pub reason: String,
    } = "close";

    /// A client broke the protocol, sent a frame that was dropped, or sent an event that was
    /// rejected (e.g. a payload that does not fit the handler's `Data<T>`).
    SocketError {
        /// What was wrong.
        pub error: String,
    } = "error";

    /// A client answered the protocol ping.
    Pong {} = "pong";

    /// Every text message as received, before dispatch (only built when a handler exists).
    RawMessage {
        /// The text.
        pub text: String,
    } = "message";

    /// A binary message, for applications that handle binary payloads. With a handler for
    /// this event every binary message comes here; without one, binary messages are handled
    /// as the seed does: one carrying UTF-8 is processed like a text message, any other is
    /// dropped (counted as malformed, with an `error` event).
    Binary {
        /// The message's bytes.
        pub data: bytes::Bytes,
    } = "binary";

    /// A client sent the application heartbeat.
    ClientPing {} = "client-ping";

    /// An error not tied to one socket (accept failure, broker error).
    ServerError {
        /// What went wrong.
        pub message: String,
    } = "server-error";

    /// The server is listening.
    Listening {
        /// The bound address.
        pub addr: SocketAddr,
    } = "listening";

    /// The server finished shutting down.
    ServerClosed {} = "server-closed";

    /// A node joined the cluster (node discovery).
    NodeJoined {
        /// Its name.
        pub node: String,
    } = "node-joined";

    /// A node left the cluster or stopped announcing itself. A node restarted before it
    /// expired (a new run under the same name) raises this for its previous run, then
    /// [`NodeJoined`] for the new one.
    NodeLeft {
        /// Its name.
        pub node: String,
    } = "node-left";

    /// An id joined a room of a namespace with presence on
    /// ([`crate::ServerConfig::with_presence`]), on this node or another: raised on every
    /// node tracking the namespace.
    PresenceJoin {
        /// The room's namespace.
        pub namespace: String,
        /// The room id.
        pub room: String,
        /// The member.
        pub id: String,
        /// The node it joined on.
        pub node: String,
    } = "presence-join";

    /// An id left a room of a namespace with presence on: it left, its socket closed, the
    /// room was removed, or its node left the cluster or expired.
    PresenceLeave {
        /// The room's namespace.
        pub namespace: String,
        /// The room id.
        pub room: String,
        /// The member.
        pub id: String,
        /// The node it was on.
        pub node: String,
    } = "presence-leave";

    /// Another live node uses this node's name (a different process run with the same
    /// name): messages meant for either node reach both, and each drops the other's as its
    /// own echo. Raised once per episode (again only after the other node was silent for the
    /// node time to live); [`crate::Server::node_name_conflict`] tells whether it lasts.
    /// Give every node its own name, or none to have one generated.
    NodeNameConflict {
        /// The shared name.
        pub node: String,
    } = "node-name-conflict";
}

impl Close {
    pub(crate) fn new(code: u16, reason: String) -> Self {
        Self { code, reason }
    }
}

impl SocketError {
    pub(crate) fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

impl ServerError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl NodeJoined {
    pub(crate) fn new(node: impl Into<String>) -> Self {
        Self { node: node.into() }
    }
}

impl NodeNameConflict {
    pub(crate) fn new(node: impl Into<String>) -> Self {
        Self { node: node.into() }
    }
}

impl NodeLeft {
    pub(crate) fn new(node: impl Into<String>) -> Self {
        Self { node: node.into() }
    }
}

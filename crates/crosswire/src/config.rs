//! Server configuration.

use std::time::Duration;

use ipnet::IpNet;

use crate::compression::PerMessageDeflate;
use crate::error::ConfigError;
use crate::handshake::HeaderRetention;
use crate::limits::RateLimit;

/// What to do when a socket's outbound queue is full (the client reads slower than the
/// server sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Drop the connection and its queue at once (a client that does not read would not read
    /// a close frame either); the `close` event reports [`crate::close_code::SEND_QUEUE_FULL`]
    /// (1008). The client reconnects and catches up. The default: a stalled client never
    /// grows memory and never delays anyone else.
    #[default]
    Disconnect,
    /// Drop the message that does not fit and keep the socket. Counted in
    /// [`crate::Stats::dropped_messages`].
    DropNewest,
}

/// Settings of a [`crate::Server`]. Build with [`ServerConfig::default`] and the `with_*`
/// setters; every default is documented on its setter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    pub(crate) node_name: String,
    /// Whether [`ServerConfig::with_node_name`] was called.
    pub(crate) name_given: bool,
    pub(crate) server_ping_interval: Duration,
    pub(crate) heartbeat_message: String,
    pub(crate) enter_background_close_time: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) slow_client_policy: SlowClientPolicy,
    pub(crate) takeover_close_code: u16,
    pub(crate) close_timeout: Duration,
    pub(crate) ws_channel_prefix: String,
    pub(crate) server_channel_prefix: String,
    pub(crate) announce_interval: Duration,
    pub(crate) node_ttl: Duration,
    pub(crate) compress_above: Option<usize>,
    pub(crate) server_request_timeout: Duration,
    pub(crate) preset_namespaces: Vec<String>,
    pub(crate) presence: Vec<String>,
    pub(crate) history: std::collections::HashMap<String, crosswire_core::Retention>,
    pub(crate) id_history: Option<crosswire_core::Retention>,
    pub(crate) auto_unsubscribe: bool,
    pub(crate) room_channels: bool,
    pub(crate) lowercase_param_keys: bool,
    pub(crate) strip_leading_slash: bool,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) header_retention: HeaderRetention,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) unbound_timeout: Option<Duration>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) permessage_deflate: Option<PerMessageDeflate>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node_name: "node-1".to_string(),
            name_given: false,
            server_ping_interval: Duration::from_secs(20),
            heartbeat_message: String::new(),
            enter_background_close_time: Duration::from_secs(10),
            max_message_size: 16 << 20,
            max_queue_bytes: 4 << 20,
            slow_client_policy: SlowClientPolicy::Disconnect,
            takeover_close_code: crate::close_code::TAKEN_OVER,
            close_timeout: Duration::from_secs(2),
            ws_channel_prefix: "crosswire:ws".to_string(),
            server_channel_prefix: "crosswire:s2s".to_string(),
            announce_interval: Duration::from_secs(1),
            node_ttl: Duration::from_secs(3),
            compress_above: None,
            server_request_timeout: Duration::from_secs(5),
            preset_namespaces: Vec::new(),
            presence: Vec::new(),
            history: std::collections::HashMap::new(),
            id_history: None,
            auto_unsubscribe: true,
            room_channels: false,
            lowercase_param_keys: false,
            strip_leading_slash: true,
            trusted_proxies: Vec::new(),
            header_retention: HeaderRetention::All,
            allowed_origins: Vec::new(),
            max_connections: None,
            unbound_timeout: None,
            rate_limit: None,
            handshake_timeout: Duration::from_secs(10),
            subprotocols: Vec::new(),
            permessage_deflate: None,
        }
    }
}

impl ServerConfig {
    /// The node's name, unique in a cluster. Default: `node-1` on a single node; a node
    /// built with a broker and no name gets a generated one (the host's name and a random
    /// suffix, logged at start), so that two nodes started alike cannot collide.
    pub fn with_node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self.name_given = true;
        self
    }

    /// How often the server sends a WebSocket ping; a socket that did not answer the previous
    /// ping with a pong is terminated. Zero disables the sweep. Default: 20 s.
    pub fn with_server_ping_interval(mut self, interval: Duration) -> Self {
        self.server_ping_interval = interval;
        self
    }

    /// The application heartbeat: a text frame whose whole content equals this string is
    /// answered with the same string (and raises `client-ping`). Default: `""`.
    pub fn with_heartbeat_message(mut self, message: impl Into<String>) -> Self {
        self.heartbeat_message = message.into();
        self
    }

    /// How long a socket marked as in background stays open. Default: 10 s.
    pub fn with_enter_background_close_time(mut self, time: Duration) -> Self {
        self.enter_background_close_time = time;
        self
    }

    /// Largest message accepted from a client; a larger one closes that socket with 1009.
    /// Default: 16 MiB.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Most bytes queued for one socket before [`SlowClientPolicy`] applies. Default: 4 MiB.
    pub fn with_max_queue_bytes(mut self, bytes: usize) -> Self {
        self.max_queue_bytes = bytes;
        self
    }

    /// What happens when a socket's queue is full. Default: [`SlowClientPolicy::Disconnect`].
    pub fn with_slow_client_policy(mut self, policy: SlowClientPolicy) -> Self {
        self.slow_client_policy = policy;
        self
    }

    /// Close code sent to a socket whose id was bound by a newer connection.
    /// Default: [`crate::close_code::TAKEN_OVER`] (4012).
    pub fn with_takeover_close_code(mut self, code: u16) -> Self {
        self.takeover_close_code = code;
        self
    }

    /// How long a closing socket waits for the client's close frame, and how long graceful
    /// shutdown waits for sockets before dropping them. Default: 2 s.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Prefix of the broker channels carrying WebSocket traffic. Default: `crosswire:ws`.
    pub fn with_ws_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ws_channel_prefix = prefix.into();
        self
    }

    /// Prefix of the broker channels carrying server-to-server traffic (events, replies, node
    /// announcements). Must differ from the WebSocket prefix, and neither may be a prefix of
    /// the other. Default: `crosswire:s2s`.
    pub fn with_server_channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.server_channel_prefix = prefix.into();
        self
    }

    /// How often a node announces itself to the others. Default: 1 s.
    pub fn with_announce_interval(mut self, interval: Duration) -> Self {
        self.announce_interval = interval;
        self
    }

    /// How long a silent node stays in the live node set. Default: 3 s.
    pub fn with_node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl;
        self
    }

    /// Compress (LZ4) envelopes between nodes whose encoded size is at least `threshold`
    /// bytes; `None` disables compression. Every node of a cluster must use the same
    /// setting: a mismatch is reported as a server error, never silently misdecoded.
    /// Default: `None`.
    pub fn with_compression(mut self, threshold: Option<usize>) -> Self {
        self.compress_above = threshold;
        self
    }

    /// Default timeout of server-to-server requests. Default: 5 s.
    pub fn with_server_request_timeout(mut self, timeout: Duration) -> Self {
        self.server_request_timeout = timeout;
        self
    }

    /// Room namespaces whose broker channel stays subscribed even with no local member.
    /// Default: none.
    pub fn with_preset_namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.preset_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Tracks who is in the rooms of `namespaces` across the cluster (presence):
    /// [`crate::Server::presence`] lists a room's members on every node, and every node raises
    /// [`crate::system::PresenceJoin`] and [`crate::system::PresenceLeave`] as they change (a
    /// node that leaves or expires takes its members with it). Each join and leave is then
    /// published to every node, which also stays subscribed to these namespaces. Default:
    /// none.
    pub fn with_presence<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.presence = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Keeps a history of the events sent to the rooms of `namespace`, within `window` (e.g.
    /// `Retention::new(100, Duration::from_secs(120))`, the default window): every event sent
    /// to such a room carries its position (`stream`, `offset`, `epoch`), and a client that
    /// comes back re-joins with [`crate::Server::join_recovering`] and gets what it missed.
    /// On a single node the history is in memory; in a cluster the broker keeps it (Redis
    /// Streams). Every node stays subscribed to the namespace. Default: no namespace keeps
    /// history. See [`crate::history`].
    pub fn with_history(
        mut self,
        namespace: impl Into<String>,
        window: crosswire_core::Retention,
    ) -> Self {
        self.history.insert(namespace.into(), window);
        self
    }

    /// Keeps a history of the events sent to each id (`Server::to`, and each id of
    /// `Server::to_ids`), within `window`: every such event carries its position in the id's
    /// stream `@<id>`, and a client that comes back is bound with
    /// [`crate::Server::bind_recovering`] and gets what was sent to it meanwhile. Default: off.
    pub fn with_id_history(mut self, window: crosswire_core::Retention) -> Self {
        self.id_history = Some(window);
        self
    }

    /// One broker channel per room (`<ws prefix>:in:{<namespace>/<room>}`) instead of one per
    /// namespace, for the namespaces that are not preset (presence ones are) or that keep
    /// history (a recovery then first waits for its room's subscription): a node subscribes to a room's channel while the room has local members, so a
    /// message to a room reaches only the nodes with members in it, and on a sharded broker
    /// (Redis Cluster, NATS) the rooms of one namespace spread over the shards. The cost: a
    /// broker subscribe when a room gets its first member on a node, and until the broker
    /// confirms it (one round trip) messages to that room from other nodes do not reach the
    /// new member. A broker that keeps history only with a channel per room (Redis Cluster:
    /// `Broker::history_needs_room_channels`) needs this on for
    /// [`ServerConfig::with_history`]. Every node of a cluster must use the same setting.
    /// Default: off.
    pub fn with_room_channels(mut self, on: bool) -> Self {
        self.room_channels = on;
        self
    }

    /// With room channels, the namespaces that still share one channel for all their rooms:
    /// the preset ones, but for those that keep history (their rooms' channels share a Redis
    /// Cluster slot with their streams; a recovery first waits for the room's subscription).
    pub(crate) fn shared_channel_namespaces(&self) -> std::collections::HashSet<String> {
        self.preset_namespaces
            .iter()
            .filter(|ns| !self.history.contains_key(*ns))
            .cloned()
            .collect()
    }

    /// Unsubscribe a namespace's channel when its last local room empties (and with room
    /// channels, a room's channel when the room empties). Default: on.
    pub fn with_auto_unsubscribe(mut self, on: bool) -> Self {
        self.auto_unsubscribe = on;
        self
    }

    /// Lower-case query parameter keys when parsing connection parameters. Default: off.
    pub fn with_lowercase_param_keys(mut self, on: bool) -> Self {
        self.lowercase_param_keys = on;
        self
    }

    /// Strip the leading `/` of the request path in connection parameters. Default: on.
    pub fn with_strip_leading_slash(mut self, on: bool) -> Self {
        self.strip_leading_slash = on;
        self
    }

    /// Proxies (addresses or networks, e.g. `"10.0.0.0/8".parse()?`) whose `Forwarded` /
    /// `X-Forwarded-For` headers are believed for [`crate::Socket::client_addr`]; from any
    /// other peer those headers are ignored, since a client can send them itself.
    /// Default: none.
    pub fn with_trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Which request headers a socket keeps once its synchronous connection handlers ran
    /// (every connection handler gets them all in [`crate::system::Connection::headers`]).
    /// Each kept header costs its size on every socket for the socket's life.
    /// Default: [`HeaderRetention::All`].
    pub fn with_header_retention(mut self, retention: HeaderRetention) -> Self {
        self.header_retention = retention;
        self
    }

    /// Browser origins allowed to connect (`https://app.example.com`, or `https://*.example.com`
    /// for every subdomain); an upgrade from any other `Origin` is refused with 403 before
    /// the upgrade. A request without `Origin` (not from a browser) is always allowed: the
    /// list protects users' browsers from other sites' pages, which always send it.
    /// Default: empty, every origin allowed.
    pub fn with_allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Most connections this node holds (open or being upgraded); past it an upgrade is
    /// refused with 503 before the 101, and the refusals are logged once per burst.
    /// Default: the process's open-file limit minus 64 (read when the server is built), so
    /// the node keeps descriptors for its broker, logs and new requests; unlimited where the
    /// limit cannot be read.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Closes a socket not bound to an id this long after it opened (code 1008, reason `not
    /// bound in time`): for apps that authenticate in a handler after connecting.
    /// Default: `None`, no limit.
    pub fn with_unbound_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.unbound_timeout = timeout;
        self
    }

    /// A rate limit on every connection's messages ([`RateLimit`]: messages and bytes per
    /// second, burst, and what happens over it). Control frames (ping, pong, close) are not
    /// counted. Default: `None`, no limit.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// How long a new connection may take to send its whole HTTP request head (the upgrade
    /// request) on the server's own listener ([`crate::Server::serve`] and friends); a
    /// silent or slow client is closed then, and so is an HTTP keep-alive connection idle
    /// this long between requests. Default: 10 s.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The WebSocket subprotocols this server speaks, in its order of preference: the 101
    /// names the first one the client offers (`Sec-WebSocket-Protocol`), and
    /// [`crate::Socket::protocol`] tells it; a client offering none of them is accepted
    /// without one (it may then close). [`crate::WsUpgrade::with_protocol`] chooses per
    /// request. Default: none.
    pub fn with_subprotocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// permessage-deflate (RFC 7692) with the clients that offer it (browsers do):
    /// messages of at least [`PerMessageDeflate::with_min_size`] bytes are sent compressed, and
    /// compressed client messages are inflated (to at most the maximum message size). A
    /// broadcast is compressed once and the bytes shared by its recipients; no connection
    /// holds compression state between messages (no context takeover either way). Default:
    /// `None`, off (the extension is not negotiated).
    ///
    /// DEFLATE shrinks a run of equal bytes about 1,000 times, so a client can make the
    /// server inflate a message of the maximum size from a few KiB: with compression on,
    /// keep [`ServerConfig::with_max_message_size`] near the largest message the
    /// application expects (the rate limit's byte budget counts inflated bytes).
    pub fn with_permessage_deflate(mut self, settings: PerMessageDeflate) -> Self {
        self.permessage_deflate = Some(settings);
        self
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Checks the settings; called by [`crate::Server::new`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() {
            return Err(ConfigError::EmptyNodeName);
        }
        if self.max_message_size == 0 {
            return Err(ConfigError::Invalid("max_message_size must be > 0"));
        }
        if self.max_queue_bytes == 0 {
            return Err(ConfigError::Invalid("max_queue_bytes must be > 0"));
        }
        if !(4000..=4999).contains(&self.takeover_close_code) {
            return Err(ConfigError::Invalid(
                "takeover_close_code must be an application code (4000..=4999)",
            ));
        }
        let (ws, s2s) = (&self.ws_channel_prefix, &self.server_channel_prefix);
        if ws.is_empty() || s2s.is_empty() {
            return Err(ConfigError::Invalid("channel prefixes must not be empty"));
        }
        if ws.starts_with(s2s.as_str()) || s2s.starts_with(ws.as_str()) {
            return Err(ConfigError::ChannelPrefixes {
                ws: ws.clone(),
                server: s2s.clone(),
            });
        }
        if self.node_name.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid(
                "node name must not contain white space",
            ));
        }
        if self.announce_interval.is_zero() || self.node_ttl <= self.announce_interval {
            return Err(ConfigError::Invalid(
                "announce_interval must be > 0 and node_ttl longer than announce_interval",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid("handshake_timeout must be > 0"));
        }
        if self.rate_limit.is_some_and(|l| !l.is_valid()) {
            return Err(ConfigError::Invalid("rate limits must be > 0"));
        }
        if self.heartbeat_message.len() > 1024 {
            return Err(ConfigError::Invalid("heartbeat_message longer than 1 KiB"));
        }
        Ok(())
    }
}

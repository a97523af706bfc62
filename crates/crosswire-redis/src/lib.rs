//! A [`crosswire_core::Broker`] over Redis pub/sub: one or more Redis nodes as equal peers, watched
//! for health, with a choice of how each message picks its node.
//!
//! ```no_run
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use crosswire_core::Broker;
//! use crosswire_redis::{RedisBroker, RedisConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RedisConfig::from_urls(["redis://127.0.0.1:6379", "redis://:secret@10.0.0.2:6379/0"])?
//!     .with_on_health_change(|event| {
//!         eprintln!(
//!             "{} {} {}: {}/{} publishers, {}/{} subscribers healthy",
//!             event.node_name, event.role, event.event,
//!             event.healthy_publishers, event.total_nodes,
//!             event.healthy_subscribers, event.total_nodes,
//!         )
//!     });
//! let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new(config)?);
//! let mut messages = broker.messages()?;
//! broker.subscribe("room:lobby").await?;
//! broker.publish("room:lobby", Bytes::from_static(b"hello")).await?;
//! let message = messages.recv().await.expect("broker alive");
//! assert_eq!(&*message.channel, "room:lobby");
//! # Ok(()) }
//! ```
//!
//! # How it works
//! **Channels and payloads.** A broker channel is a Redis pub/sub channel of the same name and
//! a payload is published as it is: `PUBLISH <channel> <payload>`, received from
//! `SUBSCRIBE <channel>`. This crate adds no framing of its own; the channel names (prefixes
//! for WebSocket and server-to-server traffic) and the MessagePack envelope inside the payload
//! belong to the crosswire node above it, which also drops its own echo and, with redundancy
//! 2, de-duplicates by origin node and sequence. Pub/sub is server-wide in Redis, so the db
//! number of a URL does not separate traffic (it is still SELECTed, so a wrong one is caught).
//!
//! **Two connections per Redis node.** For each node the broker runs two tasks:
//! - the *publisher* owns a redis-rs [`MultiplexedConnection`](redis::aio::MultiplexedConnection)
//!   and a FIFO queue. [`Broker::publish`](crosswire_core::Broker::publish) chooses the node(s) and queues the message *at call
//!   time*, so successive publishes keep their order on a node; the task drains the queue in
//!   pipelined batches (up to [`RedisConfig::publish_batch`] PUBLISH commands per round trip).
//!   If a batch fails, its messages are queued on another healthy node they have not tried
//!   (at least once: a batch that failed half-way may be published twice), and a publish
//!   resolves with an error only when no other node is healthy or twice
//!   [`RedisConfig::command_timeout`] has passed. When no node is healthy at call time it
//!   resolves [`BrokerError::Unavailable`](crosswire_core::BrokerError) at once.
//! - the *subscriber* owns its own socket. After every (re)connect it SUBSCRIBEs to every
//!   channel of the broker and counts the confirmations; [`Broker::subscribe`](crosswire_core::Broker::subscribe) adds a channel
//!   to that set and to every connected node, resolving when confirmed.
//!
//! **Health.** A node is healthy *as a publisher* while its publish connection is up and
//! answered its last PING, and *as a subscriber* only once every subscription made after the
//! last (re)connect is confirmed, so no node is ever counted healthy while it silently
//! delivers nothing. Every [`RedisConfig::redis_ping_interval`] both connections are PINGed
//! (a subscriber in subscribe mode answers `pong` too); no answer within
//! [`RedisConfig::redis_ping_timeout`], a closed socket, a failed command, an error reply or an
//! unconfirmed subscription marks the connection unhealthy and re-makes it with a backoff from
//! [`RedisConfig::reconnect_delay`] to [`RedisConfig::reconnect_delay_max`]. When a subscriber
//! loses its node it asks the publisher to PING at once, so publishing leaves a killed node
//! immediately, and in any case within interval + timeout. Every change is logged and passed
//! to [`RedisConfig::with_on_health_change`] as a [`HealthEvent`] with the counts after it;
//! subscription failures also go to [`RedisConfig::with_on_subscription_error`].
//!
//! **Strategies and order.** Each publish goes to the healthy node(s) chosen by the
//! [`PublishStrategy`]. The default, [`PublishStrategy::ChannelAffine`], hashes the channel
//! (rendezvous hashing over node names) to one node, so one publisher's messages on one
//! channel arrive in order; `Random`, `RoundRobin` and `Fastest` spread or chase latency at
//! the cost of that order. [`RedisConfig::redundancy`] 2 publishes each message on two
//! distinct nodes, so killing one of two Redis nodes mid-stream loses nothing.
//!
//! **A lagging consumer.** Received messages go into one bounded queue
//! ([`RedisConfig::message_queue`]) returned once by [`Broker::messages`](crosswire_core::Broker::messages). When it is full
//! the subscriber tasks stop reading their sockets until there is room: memory stays bounded,
//! TCP pushes back to Redis, and PING and subscription deadlines are paused for as long as
//! the queue blocks. Redis buffers what it cannot send up to its
//! `client-output-buffer-limit pubsub` (default 32 MB hard, 8 MB for 60 s) and then closes
//! the connection: the subscriber reports `disconnected`, reconnects and re-subscribes, and
//! messages published meanwhile are lost for this server node. Subscribe and unsubscribe
//! requests are served between messages, so while the queue stays full they wait too (and
//! resolve with an error after the command timeout).
//!
//! **TLS.** A `rediss://` URL (with the `tls` cargo feature) puts both connections of a node
//! behind TLS (rustls with ring). Server certificates are checked against the web roots by
//! default, or against your own authority with [`RedisTls::with_ca_pem`]; a client
//! certificate for servers that require one is given with [`RedisTls::with_client_cert_pem`].
//! The settings ([`RedisConfig::tls`]) are checked when the broker is made, and a handshake
//! that fails (unknown authority, missing client certificate) keeps the node unhealthy with
//! the reason in its health event. Certificate checks cannot be turned off (`#insecure` URLs
//! are refused).
//!
//! # Redis Cluster
//! [`RedisBroker::cluster`] runs the same broker over one Redis Cluster (Redis 7+) with
//! sharded pub/sub, so the traffic spreads over the shards instead of every Redis server
//! carrying every message:
//! - **Servers.** The configured nodes are seeds; `CLUSTER SLOTS` (read on any connected
//!   server every ping interval, at once when something looks wrong, and every 100 ms while
//!   anything waits for it) names the others, which get the same two connections as a
//!   configured node, with the first seed's credentials, db and TLS settings.
//! - **Publishing.** A channel's slot is the CRC16 of its name (of its `{hash tag}` when it
//!   has one). `SPUBLISH` goes to the slot's master, queued and batched like any publish, so
//!   one publisher's messages on one channel stay in order. While the slot has no healthy
//!   master (killed, before its replica is promoted) or when a batch is refused (`MOVED` after
//!   a resharding, `CLUSTERDOWN`), the messages are parked in call order and sent to the new
//!   master once the slot map shows one; a publish resolves with an error only if that takes
//!   longer than twice [`RedisConfig::command_timeout`]. Each message of a batch is settled
//!   by its own reply: in a batch half refused, the refused messages, and those after them on
//!   the same slot (to keep its order), are parked and the others are done, so only one of
//!   those later ones, accepted after a refusal, can be published twice.
//! - **Subscribing.** Each channel is `SSUBSCRIBE`d on *one* server of its shard, by
//!   [`RedisConfig::shard_subscriptions`]:
//!   - [`ShardSubscriptions::Masters`] (the default): on the master, so messages arrive as
//!     soon as it has them. When the master dies, its subscriptions move at once to a
//!     replica, before it is promoted, so what is published after the failover arrives; what
//!     the dead master had accepted but not yet sent is lost, and the replica may send again
//!     the last messages it had not passed on yet (the node drops such repeats by envelope).
//!     The test kills a master mid-stream: a handful lost, all just before the kill.
//!   - [`ShardSubscriptions::Replicas`]: on a replica. Redis hands sharded messages to
//!     replicas through replication, and the replica promoted when a master dies keeps its
//!     subscribers, so a failover loses nothing (the test: every message once, in order).
//!     The price is the replication delay: measured on Redis 7.0 over loopback, p50 0.2 ms
//!     but p99 about 40 ms, against 0.16 / 0.6 ms on the master.
//!
//!   A subscription moves to another server of its shard when its server's subscribe
//!   connection is down while another one is up, when the slot map no longer lists its
//!   server for the slot, or when Redis drops it by itself (the `sunsubscribe` Redis pushes
//!   when a slot migrates away); it moves back to the preferred kind of server as soon as one
//!   is up. A replica that has just come (back) up may still be replaying its master's
//!   replication backlog, sharded messages included: a subscription that moves to it then
//!   gets some recent messages again (the node drops such repeats by envelope; a raw custom
//!   channel sees them).
//! - **Health.** Healthy while the slot map covers every slot, every master's publish
//!   connection is up, and so is every subscribe connection carrying a channel.
//! - **History.** A room's stream and its meta hash are in the slot of the room's channel
//!   (the node's room channels, `ServerConfig::with_room_channels`, carry the room's
//!   `{namespace/room}` hash tag, as do the stream keys), so one script appends and
//!   `SPUBLISH`es, as on a single Redis. The generation in the epoch is the shard master's
//!   replication id: a replica promoted in a failover gets a new one, so a position from
//!   before the failover never recovers from a copy that may lack the old master's last
//!   messages. A recorded publish whose channel is not in its stream's slot is refused
//!   ([`Broker::history_needs_room_channels`](crosswire_core::Broker::history_needs_room_channels)
//!   makes a node check this at start: room channels on, no id history).
//! - **Not in cluster mode.** Strategies and redundancy 2. Order across channels is not
//!   kept (each shard is its own stream), and during a resharding a message can overtake one
//!   that was refused with `MOVED` just before it.
//!
//! # Channel layout and envelope format
//! What a crosswire node publishes through this broker (defined by the node, documented here
//! because it is what you see in `redis-cli MONITOR` or `PUBSUB CHANNELS`). With the default
//! prefixes `crosswire:ws` and `crosswire:s2s` (`ServerConfig::with_ws_channel_prefix`,
//! `with_server_channel_prefix`; they must differ):
//!
//! | channel | carries | subscribed by |
//! |---|---|---|
//! | `crosswire:ws:all` | deliveries to everyone and to ids of unknown location; id binds (`Takeover`) and departures (`Gone`); room removals | every node |
//! | `crosswire:ws:room:<namespace>` | deliveries to rooms of one namespace | nodes with a local room in it (always, for preset namespaces) |
//! | `crosswire:ws:node:<name>` | deliveries to ids known to be connected to node `<name>` | node `<name>` |
//! | `crosswire:s2s:all` | server-to-server events for every node; node announcements (`Announce`, `Leave`) | every node |
//! | `crosswire:s2s:node:<name>` | server events for named nodes; replies to `<name>`'s requests | node `<name>` |
//! | anything else | custom channels (`Server::subscribe_channel`, `publish_raw`), raw bytes | whoever subscribes |
//!
//! A unicast to an id whose node is known is published on that node's channel only: no other
//! node receives an envelope for it. Every node learns where ids live from the `Takeover`
//! announcement a node publishes when it binds an id.
//!
//! Each payload on a crosswire channel is one envelope: a marker byte (`0x01` MessagePack,
//! `0x02` LZ4-compressed MessagePack, size-prefixed), then the MessagePack array
//! `[v, origin, incarnation, seq, body]`: format version (1), origin node name, a random
//! number per process run, a sequence number per run, and the body — `Deliver {target,
//! frame}` (the complete, already encoded WebSocket frame, forwarded to local sockets without
//! parsing), `Takeover {id}`, `Gone {id}`, `RemoveRoom {namespace, room}`, `ServerEvent
//! {event, payload, request, targets}`, `ServerReply {request, to, payload}`, `Announce
//! {ttl_ms, compression, hello}`, `Leave`. A node drops envelopes from itself and duplicates
//! by `(origin, incarnation, seq)` (a 65,536-wide window per origin run), which is what makes
//! `redundancy = 2` lossless and duplicate-free. The types are in
//! `crosswire_protocol::envelope`.
//!
//! # History
//! A room whose namespace keeps history (`ServerConfig::with_history`) is a Redis Stream
//! `crosswire:ws:history:{<namespace>/<room>}` with a meta hash beside it (`…:meta`: the
//! epoch and the last offset; the `{…}` hash tag keeps both in one Redis Cluster slot). Each
//! message to it goes to the stream's *home*, the node rendezvous hashing picks for the stream
//! among the healthy nodes (whatever the strategy, and never twice with redundancy 2: offsets
//! come from one place), as one `EVALSHA` pipelined with the plain `PUBLISH`es: it takes the
//! next offset, `XADD`s with `MAXLEN ~ <size>`, trims entries older than the window, renews the
//! keys' expiry (the stream's after the window, the meta's after a day), and `PUBLISH`es
//! `0xC1 0x00 "cw:" <offset> ' ' <epoch> ' ' <envelope>` on the room's channel. `0xC1` begins
//! no MessagePack value, so the subscriber tells positioned messages apart (a custom
//! channel's payload must not begin with those five bytes) and hands them on with
//! [`BrokerMessage::position`](crosswire_core::BrokerMessage) set. A missing meta hash (Redis
//! restarted without persistence, or a stream quiet for a day) gets a new epoch, made from
//! Redis's clock, so clients holding positions of the lost history are told they cannot
//! recover. Reads (`Broker::read_stream`) run a second script on the home's publish
//! connection. If the home dies, the stream's next messages go to the next node in rendezvous
//! order, with an epoch of its own there. The epoch clients see also names the Redis node's
//! generation ([`GENERATION_KEY`]), which a broker bumps whenever its publish connection to
//! that node comes back after a loss: a node that was frozen or cut off (not restarted) still
//! holds its old history, but the messages sent meanwhile went elsewhere, so no position of
//! before may recover from it. (A node cut off from only some crosswire nodes while others
//! kept publishing to it is a split brain this cannot see.)
//!
//! # Why redis-rs
//! The client is [redis-rs](redis): its multiplexed connection gives pipelined publishing with
//! connection and response timeouts, its URL parser covers `redis://`/`rediss://` with
//! user, password and db, and it imposes no reconnect or subscription machinery of its own, so
//! health here follows exactly what the broker observes. fred.rs offers more (a
//! `ReconnectPolicy`, managed re-subscription), but its subscriber delivers through a
//! broadcast channel that drops messages for a slow receiver, and redis-rs's own async
//! `PubSub` forwards through an unbounded channel; neither lets a lagging consumer push back
//! on the socket, and both hide when a re-subscription is confirmed. So the subscribe
//! connection reads its socket itself with a small RESP2 decoder (commands are still packed by
//! redis-rs), which gives bounded memory and exact confirmation tracking.
//!
//! # Layout
//! `config` (nodes, strategy, timings, errors), `broker` ([`RedisBroker`], publish routing and
//! retry, the node table), `publisher` and `subscriber` (one task per connection), `cluster`
//! (Redis Cluster mode: choosing servers, releasing parked publishes, the slot-map task)
//! over `slots` (the slot map and cluster state that needs nothing above it), `job` (a
//! queued publish), `sync` (poison-tolerant locks),
//! `strategy` (node choice), `health` (events), `resp` (the RESP2 decoder), `history` (the
//! history scripts), `tls` ([`RedisTls`]).
#![warn(missing_docs)]

mod broker;
mod cluster;
mod config;
mod health;
mod history;
mod job;
mod publisher;
mod resp;
mod shared;
mod slots;
mod strategy;
mod subscriber;
mod sync;
mod tls;

pub use broker::{AddNodeError, RedisBroker};
pub use config::{ConfigError, PublishStrategy, RedisConfig, RedisNodeConfig, ShardSubscriptions};
pub use health::{HealthCallback, HealthEvent, HealthEventKind, NodeStatus, Role};
pub use history::GENERATION_KEY;
pub use tls::{ClientCertificate, RedisTls};

/// The per-input check run by the `resp` fuzz target (`fuzz/` at the repository root) and by
/// `tests/fuzz_bounded.rs`. **Not part of the API**: hidden from the docs and free to change
/// in any release. It panics when an invariant of the RESP decoder is broken; the decoder
/// itself never panics on input. See `docs/FUZZING.md`.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::{BufMut, BytesMut};

    use crate::resp::{decode_with, Frame, Limits, RespError};

    /// Limits small enough for inputs of a few kilobytes to reach every one of them.
    const SMALL: Limits = Limits {
        bulk: 64,
        array: 8,
        depth: 3,
        line: 24,
        reply: 256,
    };

    /// No limits but the nesting depth: used to decode the canonical form of a reply.
    const UNBOUNDED: Limits = Limits {
        bulk: usize::MAX,
        array: usize::MAX,
        depth: Limits::REDIS.depth,
        line: usize::MAX,
        reply: usize::MAX,
    };

    /// What decoding one stream within one set of limits produced.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RespSummary {
        /// Replies decoded.
        pub replies: usize,
        /// Why the stream was refused (the error's message), if it was.
        pub error: Option<String>,
        /// Bytes left over at the end, an incomplete reply (0 when the stream was refused).
        pub leftover: usize,
    }

    /// The outcome of [`resp`] under both sets of limits.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RespOutcome {
        /// Within the limits of the subscribe connection.
        pub redis: RespSummary,
        /// Within small limits (bulk 64, array 8, depth 3, line 24, reply 256 bytes).
        pub small: RespSummary,
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Trace {
        replies: Vec<Frame>,
        error: Option<RespError>,
        leftover: usize,
    }

    /// Fuzzes the RESP2 decoder of the subscribe connection. Byte 0 sets a read size (1–256),
    /// the rest is the stream, decoded within Redis's limits and within small ones, each in
    /// one read, in reads of that size and (up to 4 KiB) one byte per read, decoding until
    /// more bytes are needed, as the subscriber does. Checked: each reply consumes bytes (decoding ends) and
    /// respects every limit; the decoder never waits with more than the reply limit
    /// buffered (claimed lengths cannot make the buffer grow past it); a reply's canonical
    /// encoding decodes to the same reply; and the three runs agree exactly.
    pub fn resp(data: &[u8]) -> RespOutcome {
        let (read, stream) = match data.split_first() {
            Some((&first, rest)) => (usize::from(first) + 1, rest),
            None => (1, data),
        };
        RespOutcome {
            redis: check(stream, read, &Limits::REDIS),
            small: check(stream, read, &SMALL),
        }
    }

    /// Longest stream also decoded one byte per read: the decoder re-parses a reply from its
    /// start on every read, so long lines fed byte by byte would take quadratic time.
    const BYTEWISE_MAX: usize = 4096;

    fn check(stream: &[u8], read: usize, limits: &Limits) -> RespSummary {
        let whole = run(stream, stream.len().max(1), limits);
        assert_eq!(whole, run(stream, read, limits), "depends on the read size");
        if stream.len() <= BYTEWISE_MAX {
            assert_eq!(whole, run(stream, 1, limits), "differs byte by byte");
        }
        RespSummary {
            replies: whole.replies.len(),
            error: whole.error.map(|e| e.to_string()),
            leftover: whole.leftover,
        }
    }

    fn run(stream: &[u8], read: usize, limits: &Limits) -> Trace {
        let mut buf = BytesMut::new();
        let mut replies = Vec::new();
        for chunk in stream.chunks(read) {
            buf.extend_from_slice(chunk);
            loop {
                let before = buf.len();
                match decode_with(&mut buf, limits) {
                    Ok(Some(reply)) => {
                        let used = before - buf.len();
                        assert!(used > 0, "a reply consumed no bytes");
                        assert!(used <= limits.reply, "reply of {used} bytes");
                        within(&reply, limits, 0);
                        let mut canonical = BytesMut::new();
                        encode(&reply, &mut canonical);
                        let again = decode_with(&mut canonical, &UNBOUNDED);
                        assert_eq!(again, Ok(Some(reply.clone())), "canonical form differs");
                        assert!(canonical.is_empty(), "canonical form has trailing bytes");
                        replies.push(reply);
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "consumed bytes without a reply");
                        assert!(buf.len() <= limits.reply, "waits with {before} bytes");
                        break;
                    }
                    Err(error) => {
                        // How much had been read when the error showed depends on the reads:
                        // the leftover is not compared.
                        return Trace {
                            replies,
                            error: Some(error),
                            leftover: 0,
                        };
                    }
                }
            }
        }
        Trace {
            replies,
            error: None,
            leftover: buf.len(),
        }
    }

    /// Asserts that `frame`, at nesting `depth`, respects `limits`.
    fn within(frame: &Frame, limits: &Limits, depth: usize) {
        match frame {
            Frame::Bulk(Some(b)) => assert!(b.len() <= limits.bulk, "bulk of {}", b.len()),
            Frame::Simple(s) | Frame::Error(s) => {
                assert!(s.len() < limits.line, "line of {}", s.len());
                assert!(!s.contains(&b'\n'), "line with a line feed");
            }
            Frame::Array(Some(items)) => {
                assert!(depth < limits.depth, "arrays nested {} deep", depth + 1);
                assert!(items.len() <= limits.array, "array of {}", items.len());
                for item in items {
                    within(item, limits, depth + 1);
                }
            }
            Frame::Integer(_) | Frame::Bulk(None) | Frame::Array(None) => {}
        }
    }

    /// Writes the canonical RESP2 form of `frame`.
    fn encode(frame: &Frame, out: &mut BytesMut) {
        match frame {
            Frame::Simple(s) | Frame::Error(s) => {
                out.put_u8(if matches!(frame, Frame::Simple(_)) {
                    b'+'
                } else {
                    b'-'
                });
                out.put_slice(s);
                out.put_slice(b"\r\n");
            }
            Frame::Integer(n) => out.put_slice(format!(":{n}\r\n").as_bytes()),
            Frame::Bulk(None) => out.put_slice(b"$-1\r\n"),
            Frame::Bulk(Some(b)) => {
                out.put_slice(format!("${}\r\n", b.len()).as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Frame::Array(None) => out.put_slice(b"*-1\r\n"),
            Frame::Array(Some(items)) => {
                out.put_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    encode(item, out);
                }
            }
        }
    }
}

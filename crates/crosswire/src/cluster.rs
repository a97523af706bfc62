//! The cluster core: what a node publishes through its [`Broker`] and what it does with what
//! it receives — client-bound deliveries, id takeovers, server-to-server events and replies,
//! and node announcements.
//!
//! # Channels
//! With the default prefixes (`crosswire:ws`, `crosswire:s2s`):
//!
//! | channel | carries | subscribed by |
//! |---|---|---|
//! | `crosswire:ws:all` | deliveries to everyone, to ids of unknown location; id takeovers and departures; room removals | every node |
//! | `crosswire:ws:room:<namespace>` | deliveries to rooms of one namespace; presence | nodes with a local room in it (always, for preset namespaces) |
//! | `crosswire:ws:in:{<namespace>/<room>}` | with room channels (`ServerConfig::with_room_channels`), deliveries to one room of a namespace that is not preset | nodes with a local member in the room |
//! | `crosswire:ws:node:<name>` | deliveries to ids known to live on node `<name>` | node `<name>` |
//! | `crosswire:s2s:all` | server events for every node; node announcements | every node |
//! | `crosswire:s2s:node:<name>` | server events for named nodes; replies to `<name>`'s requests | node `<name>` |
//!
//! A unicast to an id whose node is known (every bind is announced) is published on that
//! node's channel only, so no other node receives an envelope for it.
//!
//! # Envelopes
//! MessagePack ([`crosswire_protocol::envelope`]), optionally LZ4-compressed above a size
//! threshold; every node must use the same setting, and a mismatch is reported as a server
//! error. Each envelope carries its origin node, the origin's incarnation (a random number per
//! process run) and a sequence number: a node drops its own echo, and drops duplicates when
//! the broker delivers a message twice (e.g. published on two Redis nodes for redundancy).
//!
//! # Recorded deliveries
//! A delivery to a room or id that keeps history goes out with `Broker::publish_recorded` on
//! the same channel as any other delivery; the broker appends it to the stream and publishes
//! it with its position. Every node that receives it, this one included (the one exception to
//! dropping its own echo), delivers it then. If the broker refuses it, this node still delivers
//! it to its own sockets without a position.
//!
//! # Order
//! Outgoing operations (publish, subscribe, unsubscribe) go through one ordered queue to one
//! task, so messages from this node reach the broker in the order they were sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::registry::Membership;
use crate::socket::Batch;
use crate::stats::Stats;
use crate::sync::lock;
use crosswire_core::{Broker, BrokerMessage, Position, Retention, StreamRead};
use crosswire_protocol::envelope::{Body, Codec, Envelope, EnvelopeError, Target};

/// Capacity of the ordered queue of outgoing broker operations.
const OUTGOING_QUEUE: usize = 65_536;
/// Broker messages handled before written sockets are flushed.
const INCOMING_BATCH: usize = 256;
/// Outgoing operations started before their results are awaited together.
const OUTGOING_BATCH: usize = 256;
/// Sequence numbers remembered per origin for duplicate detection.
const DEDUP_WINDOW: u64 = 1 << 16;

/// How long a join or a recovery waits for the broker to confirm a subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why queued operations were not confirmed by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unconfirmed {
    /// The queue is closed (the node is shutting down).
    Closed,
    /// The broker did not answer in time (it is down or slow).
    TimedOut,
    /// The broker answered the subscribe with an error (it is down).
    Refused,
}

pub(crate) enum Outgoing {
    Publish(Arc<str>, Bytes),
    /// A publish appended to a history stream.
    PublishRecorded(Box<Recorded>),
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every operation queued before it has been handed to the broker.
    Flush(oneshot::Sender<()>),
}

/// A recorded publish. Should the broker refuse it, this node decodes the envelope again and
/// delivers it to its own sockets (a rare path: nothing is copied for it on the way out).
pub(crate) struct Recorded {
    channel: Arc<str>,
    /// The history stream's broker key.
    key: String,
    envelope: Bytes,
    window: Retention,
}

/// Channel names of one cluster.
pub(crate) struct Channels {
    ws_prefix: String,
    s2s_prefix: String,
    pub(crate) ws_all: Arc<str>,
    ws_room: String,
    ws_in: String,
    ws_node: String,
    pub(crate) s2s_all: Arc<str>,
    s2s_node: String,
}

impl Channels {
    fn new(config: &ServerConfig) -> Self {
        let ws = &config.ws_channel_prefix;
        let s2s = &config.server_channel_prefix;
        Self {
            ws_prefix: format!("{ws}:"),
            s2s_prefix: format!("{s2s}:"),
            ws_all: Arc::from(format!("{ws}:all")),
            ws_room: format!("{ws}:room:"),
            ws_in: format!("{ws}:in:"),
            ws_node: format!("{ws}:node:"),
            s2s_all: Arc::from(format!("{s2s}:all")),
            s2s_node: format!("{s2s}:node:"),
        }
    }

    /// Whether a channel carries crosswire envelopes (otherwise it is a custom channel).
    fn is_internal(&self, channel: &str) -> bool {
        channel.starts_with(&self.ws_prefix) || channel.starts_with(&self.s2s_prefix)
    }

    pub(crate) fn room(&self, namespace: &str) -> String {
        format!("{}{namespace}", self.ws_room)
    }

    /// The channel of one room, with the room's `{namespace/room}` as its hash tag: on Redis
    /// Cluster it shares a slot with the room's history stream.
    pub(crate) fn room_of(&self, namespace: &str, room: &str) -> String {
        format!("{}{{{namespace}/{room}}}", self.ws_in)
    }

    pub(crate) fn ws_node(&self, node: &str) -> Arc<str> {
        Arc::from(format!("{}{node}", self.ws_node))
    }

    pub(crate) fn s2s_node(&self, node: &str) -> Arc<str> {
        Arc::from(format!("{}{node}", self.s2s_node))
    }
}

/// A peer node seen alive.
struct Peer {
    last_seen: Instant,
    ttl: Duration,
    /// The peer's current run; a new one means it restarted.
    incarnation: u64,
}

/// Which sequence numbers of one origin incarnation were seen.
struct SeenWindow {
    max: u64,
    bits: Box<[u64]>,
}

impl SeenWindow {
    fn new() -> Self {
        Self {
            max: 0,
            bits: vec![0u64; (DEDUP_WINDOW / 64) as usize].into_boxed_slice(),
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % DEDUP_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Records `seq`; returns false when it was seen before (or is too old to tell).
    fn accept(&mut self, seq: u64) -> bool {
        if seq + DEDUP_WINDOW <= self.max {
            return false;
        }
        if seq > self.max {
            // Clear the slots between the old and the new maximum: they are reused now.
            let from = self.max + 1;
            if seq - self.max >= DEDUP_WINDOW {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in from..seq {
                    let (w, b) = Self::slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.max = seq;
            let (w, b) = Self::slot(seq);
            self.bits[w] |= b;
            return true;
        }
        let (w, b) = Self::slot(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

pub(crate) struct Cluster {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) node: Arc<str>,
    incarnation: u64,
    seq: AtomicU64,
    tx: mpsc::Sender<Outgoing>,
    pub(crate) channels: Channels,
    codec: Codec,
    announce_interval: Duration,
    node_ttl: Duration,
    peers: Mutex<HashMap<Arc<str>, Peer>>,
    /// Where ids bound on other nodes live, learnt from their bind announcements, with the
    /// claim each was bound with.
    locations: Mutex<HashMap<Arc<str>, Location>>,
    seen: Mutex<HashMap<(Arc<str>, u64), SeenWindow>>,
    /// Runs of peers that said they leave, and when: a late announcement of theirs (one
    /// that crossed the departure, e.g. through another Redis node) does not bring them back.
    departed: Mutex<HashMap<(Arc<str>, u64), Instant>>,
    stop: CancellationToken,
    /// Set once the initial subscriptions are made and the hello is queued.
    hello_sent: AtomicBool,
    received: AtomicU64,
    duplicates: AtomicU64,
    deliveries: AtomicU64,
    /// Operations not queued because the outgoing queue was full.
    dropped: AtomicU64,
    /// When an envelope of another run with this node's own name was last seen.
    name_conflict: Mutex<Option<Instant>>,
    /// With room channels: the namespaces that keep one channel for all their rooms.
    room_channels: Option<std::collections::HashSet<String>>,
    /// Channels whose last subscribe the broker refused or did not answer (it was down): a
    /// confirmed join subscribes them again.
    failed_subscriptions: Mutex<std::collections::HashSet<String>>,
    /// Room channels held subscribed by recoveries in progress, with how many hold each.
    held: Mutex<HashMap<String, usize>>,
}

pub(crate) use crosswire_core::random_u64;

impl Cluster {
    pub(crate) fn new(
        config: &ServerConfig,
        broker: Arc<dyn Broker>,
    ) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        (
            Self {
                broker,
                node: Arc::from(config.node_name.as_str()),
                incarnation: random_u64(),
                seq: AtomicU64::new(0),
                tx,
                channels: Channels::new(config),
                codec: match config.compress_above {
                    Some(threshold) => Codec::compressed(threshold),
                    None => Codec::default(),
                },
                announce_interval: config.announce_interval,
                node_ttl: config.node_ttl,
                peers: Mutex::new(HashMap::new()),
                locations: Mutex::new(HashMap::new()),
                seen: Mutex::new(HashMap::new()),
                departed: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
                hello_sent: AtomicBool::new(false),
                received: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                deliveries: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                name_conflict: Mutex::new(None),
                room_channels: config
                    .room_channels
                    .then(|| config.shared_channel_namespaces()),
                failed_subscriptions: Mutex::new(std::collections::HashSet::new()),
                held: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    fn envelope(&self, body: Body) -> Option<Bytes> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        match self
            .codec
            .encode(&Envelope::new(&*self.node, self.incarnation, seq, body))
        {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                tracing::error!(error = %e, "could not encode envelope");
                None
            }
        }
    }

    pub(crate) fn publish(&self, channel: Arc<str>, body: Body) {
        if let Some(bytes) = self.envelope(body) {
            self.queue(Outgoing::Publish(channel, bytes));
        }
    }

    /// Queues an outgoing broker operation; counted and dropped when the queue is full. The
    /// drop is logged at the 1st, 2nd, 4th, 8th… one, so that an overload does not also
    /// flood the log (the counter, `broker_publish_drops`, has them all).
    pub(crate) fn queue(&self, op: Outgoing) {
        if self.tx.try_send(op).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "broker publish queue full or closed; message dropped"
                );
            }
        }
    }

    /// Adds this cluster's counters to a node's snapshot.
    pub(crate) fn add_stats(&self, stats: &mut Stats) {
        stats.broker_dropped = self.dropped.load(Ordering::Relaxed);
        stats.envelopes_received = self.received.load(Ordering::Relaxed);
        stats.envelopes_duplicate = self.duplicates.load(Ordering::Relaxed);
        stats.remote_deliveries = self.deliveries.load(Ordering::Relaxed);
    }

    /// Publishes a recorded delivery (to a room, or to one id; `here` when that id is bound
    /// on this node): appended to stream `key` and published by the broker in one step, and
    /// delivered by every node that receives it (this one too) when it comes back with its
    /// position.
    pub(crate) fn publish_recorded(
        &self,
        target: Target,
        frame: Bytes,
        key: String,
        window: Retention,
        here: bool,
    ) {
        let channel: Arc<str> = match &target {
            Target::Room {
                namespace, room, ..
            } => self.room_channel(namespace, room),
            Target::Id(_) if here => self.channels.ws_node(&self.node),
            Target::Id(id) => self.node_channel(self.location(id)),
            Target::Ids(_) | Target::All { .. } => return,
        };
        if let Some(envelope) = self.envelope(Body::Deliver { target, frame }) {
            self.queue(Outgoing::PublishRecorded(Box::new(Recorded {
                channel,
                key,
                envelope,
                window,
            })));
        }
    }

    /// The deliveries of a history read, decoded. An entry that does not decode makes the read
    /// incomplete: a client is never told it recovered around a message it cannot get.
    pub(crate) fn decode_read(&self, read: StreamRead<Bytes>) -> StreamRead<(Target, Bytes)> {
        let mut complete = read.complete;
        let mut entries = Vec::with_capacity(read.entries.len());
        for (offset, bytes) in read.entries {
            match self.codec.decode(&bytes).map(|e| e.body) {
                Ok(Body::Deliver { target, frame }) => entries.push((offset, (target, frame))),
                Ok(_) | Err(_) => {
                    tracing::warn!(offset, "undecodable history entry skipped");
                    complete = false;
                }
            }
        }
        StreamRead {
            epoch: read.epoch,
            top: read.top,
            entries,
            complete,
        }
    }

    /// Publishes a client-bound delivery on the channels that reach its recipients.
    pub(crate) fn publish_delivery(&self, target: Target, frame: Bytes) {
        match target {
            Target::Room { .. } => {
                let Target::Room {
                    namespace, room, ..
                } = &target
                else {
                    return;
                };
                let channel = self.room_channel(namespace, room);
                self.publish(channel, Body::Deliver { target, frame });
            }
            Target::All { .. } => {
                let channel = Arc::clone(&self.channels.ws_all);
                self.publish(channel, Body::Deliver { target, frame });
            }
            Target::Id(id) => {
                let channel = self.node_channel(self.location(&id));
                self.publish(
                    channel,
                    Body::Deliver {
                        target: Target::Id(id),
                        frame,
                    },
                );
            }
            Target::Ids(ids) => {
                // Group by known node; ids of unknown location go to everyone at once.
                let mut by_node: HashMap<Option<Arc<str>>, Vec<String>> = HashMap::new();
                {
                    let locations = lock(&self.locations);
                    for id in ids {
                        let node = locations.get(id.as_str()).map(|l| Arc::clone(&l.node));
                        by_node.entry(node).or_default().push(id);
                    }
                }
                for (node, ids) in by_node {
                    let channel = self.node_channel(node);
                    self.publish(
                        channel,
                        Body::Deliver {
                            target: Target::Ids(ids),
                            frame: frame.clone(),
                        },
                    );
                }
            }
        }
    }

    /// The channel reaching a node's sockets, or every node when the node is unknown.
    pub(crate) fn node_channel(&self, node: Option<Arc<str>>) -> Arc<str> {
        match node {
            Some(node) => self.channels.ws_node(&node),
            None => Arc::clone(&self.channels.ws_all),
        }
    }

    pub(crate) fn location(&self, id: &str) -> Option<Arc<str>> {
        lock(&self.locations).get(id).map(|l| Arc::clone(&l.node))
    }

    /// Records that `id` lives on `node`, unless a later claim of it was seen already.
    fn located(&self, id: Arc<str>, node: &Arc<str>, claim: u64) {
        let mut locations = lock(&self.locations);
        match locations.get_mut(&id) {
            Some(l) if l.claim > claim && claim != 0 => {}
            Some(l) => {
                l.node = Arc::clone(node);
                l.claim = claim;
            }
            None => {
                locations.insert(
                    id,
                    Location {
                        node: Arc::clone(node),
                        claim,
                    },
                );
            }
        }
    }

    /// The claim for a bind of `id` here now: the time in milliseconds, raised above every
    /// claim of `id` seen (another node's, or `floor`, the socket it replaces here), so that
    /// a later bind wins over one this node knew of, whatever the clocks say.
    pub(crate) fn claim_for(&self, id: &str, floor: u64) -> u64 {
        let seen = lock(&self.locations).get(id).map_or(0, |l| l.claim);
        crate::socket::unix_ms()
            .max(seen.saturating_add(1))
            .max(floor.saturating_add(1))
    }

    pub(crate) fn announce_takeover(&self, id: &str, claim: u64, conn: u64) {
        let channel = Arc::clone(&self.channels.ws_all);
        let body = Body::Takeover {
            id: id.to_string(),
            claim,
            conn,
        };
        self.publish(channel, body);
    }

    pub(crate) fn announce_gone(&self, id: &str) {
        let channel = Arc::clone(&self.channels.ws_all);
        self.publish(channel, Body::Gone { id: id.to_string() });
    }

    pub(crate) fn publish_remove_room(&self, namespace: &str, room: &str) {
        let channel = Arc::clone(&self.channels.ws_all);
        self.publish(
            channel,
            Body::RemoveRoom {
                namespace: namespace.to_string(),
                room: room.to_string(),
            },
        );
    }

    /// The channel of a delivery to a room: the room's own when rooms have channels and its
    /// namespace is not preset, else the namespace's.
    fn room_channel(&self, namespace: &str, room: &str) -> Arc<str> {
        if self.has_room_channels(namespace) {
            Arc::from(self.channels.room_of(namespace, room))
        } else {
            Arc::from(self.channels.room(namespace))
        }
    }

    /// Whether `namespace`'s rooms each have a channel of their own.
    pub(crate) fn has_room_channels(&self, namespace: &str) -> bool {
        self.room_channels
            .as_ref()
            .is_some_and(|shared| !shared.contains(namespace))
    }

    /// Waits (bounded) until the subscription that deliveries to `room` of `namespace` take
    /// here is confirmed: every operation queued so far (the subscription a join queued among
    /// them) has been answered, and the channel's last subscribe succeeded, or, when it had
    /// failed (the broker was down), a new one did.
    pub(crate) async fn confirm_room_subscribed(
        &self,
        namespace: &str,
        room: &str,
    ) -> Result<(), Unconfirmed> {
        let channel = self.room_channel(namespace, room);
        self.queue_confirmed(None, CONFIRM_TIMEOUT).await?;
        if !self.subscribe_failed(&channel) {
            return Ok(());
        }
        let subscribe = Outgoing::Subscribe(channel.to_string());
        self.queue_confirmed(Some(subscribe), CONFIRM_TIMEOUT)
            .await?;
        if self.subscribe_failed(&channel) {
            Err(Unconfirmed::Refused)
        } else {
            Ok(())
        }
    }

    /// Whether `channel`'s last subscribe failed (and no unsubscribe came after it).
    fn subscribe_failed(&self, channel: &str) -> bool {
        lock(&self.failed_subscriptions).contains(channel)
    }

    /// Notes whether the last subscribe or unsubscribe of `channel` left a failed subscribe.
    fn note_subscription(&self, channel: &str, failed: bool) {
        let mut failures = lock(&self.failed_subscriptions);
        if failed {
            failures.insert(channel.to_string());
        } else {
            failures.remove(channel);
        }
    }

    /// Queues `op` (if any) and a flush through the ordered queue, and waits (at most
    /// `timeout`) until the broker has answered both.
    async fn queue_confirmed(
        &self,
        op: Option<Outgoing>,
        timeout: Duration,
    ) -> Result<(), Unconfirmed> {
        let (done, flushed) = oneshot::channel();
        let queued = async {
            if let Some(op) = op {
                self.tx.send(op).await?;
            }
            self.tx.send(Outgoing::Flush(done)).await?;
            Ok::<_, mpsc::error::SendError<Outgoing>>(())
        };
        let confirmed = async {
            queued.await.map_err(|_| Unconfirmed::Closed)?;
            flushed.await.map_err(|_| Unconfirmed::Closed)
        };
        tokio::time::timeout(timeout, confirmed)
            .await
            .unwrap_or(Err(Unconfirmed::TimedOut))
    }

    pub(crate) fn subscribe_room(&self, namespace: &str, room: &str) {
        self.queue(Outgoing::Subscribe(self.channels.room_of(namespace, room)));
    }

    /// Unsubscribes from a room's channel, unless a recovery holds it ([`Cluster::hold_room`]).
    /// Called under the registry's lock, like every change of room subscriptions.
    pub(crate) fn unsubscribe_room(&self, namespace: &str, room: &str) {
        let channel = self.channels.room_of(namespace, room);
        let held = lock(&self.held);
        if !held.contains_key(&channel) {
            self.queue(Outgoing::Unsubscribe(channel));
        }
    }

    /// Holds a room's channel subscribed for a recovery, whose join comes only after its
    /// history read: the room's last local member leaving meanwhile does not unsubscribe it.
    /// Queues the subscribe unless `subscribed` (the room has local members). Under the
    /// registry's lock, with [`Cluster::release_room`] to end it.
    pub(crate) fn hold_room(&self, namespace: &str, room: &str, subscribed: bool) {
        let channel = self.channels.room_of(namespace, room);
        let mut held = lock(&self.held);
        *held.entry(channel.clone()).or_default() += 1;
        if !subscribed {
            self.queue(Outgoing::Subscribe(channel));
        }
    }

    /// Ends a [`Cluster::hold_room`]; the last hold unsubscribes when `unsubscribe` (the room
    /// has no local members and `auto_unsubscribe` is on). Under the registry's lock.
    pub(crate) fn release_room(&self, namespace: &str, room: &str, unsubscribe: bool) {
        let channel = self.channels.room_of(namespace, room);
        let mut held = lock(&self.held);
        let last = match held.get_mut(&channel) {
            Some(holds) if *holds > 1 => {
                *holds -= 1;
                false
            }
            Some(_) => held.remove(&channel).is_some(),
            None => false,
        };
        if last && unsubscribe {
            self.queue(Outgoing::Unsubscribe(channel));
        }
    }

    pub(crate) fn subscribe_namespace(&self, namespace: &str) {
        self.queue(Outgoing::Subscribe(self.channels.room(namespace)));
    }

    pub(crate) fn unsubscribe_namespace(&self, namespace: &str) {
        self.queue(Outgoing::Unsubscribe(self.channels.room(namespace)));
    }

    /// Whether a custom channel name would collide with crosswire's own channels.
    pub(crate) fn is_reserved(&self, channel: &str) -> bool {
        self.channels.is_internal(channel)
    }

    fn announce(&self, hello: bool) {
        if self.stop.is_cancelled() {
            // Leaving: an announcement now would bring this node back to life elsewhere.
            return;
        }
        let channel = Arc::clone(&self.channels.s2s_all);
        self.publish(
            channel,
            Body::Announce {
                ttl_ms: self.node_ttl.as_millis() as u64,
                compression: self.codec.compress_above.is_some(),
                hello,
            },
        );
    }

    /// The live peer nodes (not this one), sorted.
    pub(crate) fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.peers).keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// Stops the announcer and the receiver, and any further announcement.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// How long a departed run is remembered.
    fn departed_retention(&self) -> Duration {
        (self.node_ttl * 4).max(Duration::from_secs(10))
    }

    /// Removes a peer and everything learnt from it.
    fn forget_peer(&self, node: &str) -> bool {
        let removed = lock(&self.peers).remove(node).is_some();
        if removed {
            lock(&self.locations).retain(|_, l| &*l.node != node);
            lock(&self.seen).retain(|(n, _), _| &**n != node);
        }
        removed
    }
}

/// Where an id bound on another node lives, and the claim it was bound with.
#[derive(Debug)]
struct Location {
    node: Arc<str>,
    claim: u64,
}

/// A bind of an id, as two binds that cross are compared: the later claim wins; equal
/// claims go to the greater node name, then the greater connection number. A claim of 0
/// (from a node that predates claims) loses to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) at: u64,
    pub(crate) node: Arc<str>,
    pub(crate) conn: u64,
}

impl Claim {
    /// Whether this bind keeps its socket against `other`.
    pub(crate) fn beats(&self, other: &Claim) -> bool {
        other.at != 0 && (self.at, &self.node, self.conn) > (other.at, &other.node, other.conn)
    }
}

/// What the cluster layer needs from the node above it: local delivery, the registry's
/// reaction to other nodes, handlers and system events. Implemented by the node, so this
/// layer looks down only; the tasks hold it weakly and stop when the node is gone.
/// (Statically dispatched: the node's handlers need its `Arc`.)
pub(crate) trait Host: Send + Sync + Sized + 'static {
    /// This node's cluster part.
    fn cluster(&self) -> Option<&Cluster>;
    /// Delivers a frame that another node published to this node's sockets.
    fn deliver(self: &Arc<Self>, target: &Target, frame: &Bytes);
    /// Delivers a recorded frame (any node's, this one's included) with its position.
    fn deliver_positioned(self: &Arc<Self>, target: &Target, frame: &Bytes, position: &Position);
    /// A recorded message of this node that the broker refused: delivered to this node's
    /// sockets without a position.
    fn unrecorded(self: &Arc<Self>, target: &Target, frame: &Bytes);
    /// `id` was bound on another node: close and forget the local socket bound to it.
    /// Another node bound `id` with `remote`: a socket bound to it here closes unless its
    /// own claim is greater, which is returned then.
    fn taken_over(self: &Arc<Self>, id: &str, remote: &Claim) -> Option<Claim>;
    /// A room was removed on every node.
    fn remove_room(self: &Arc<Self>, namespace: &str, room: &str);
    /// A member of `origin` joined or left a room whose presence is tracked.
    fn presence(self: &Arc<Self>, origin: &Arc<str>, change: Membership);
    /// A server-to-server event for this node.
    fn server_event(
        self: &Arc<Self>,
        origin: &str,
        event: &str,
        payload: Bytes,
        request: Option<u64>,
    );
    /// A reply to one of this node's server-to-server requests.
    fn server_reply(self: &Arc<Self>, request: u64, origin: &str, payload: Bytes);
    /// A message on a custom channel.
    fn channel_message(self: &Arc<Self>, message: &BrokerMessage);
    /// A peer joined (`true`) or left (`false`).
    fn peer_changed(self: &Arc<Self>, node: &str, joined: bool);
    /// Another live node uses this node's name.
    fn name_conflict(self: &Arc<Self>, node: &str);
    /// A broker or envelope problem worth a `ServerError` event.
    fn report(self: &Arc<Self>, message: String);
    /// Handling one broker message panicked outside any handler.
    fn panicked(self: &Arc<Self>, channel: &str, panic: &(dyn std::any::Any + Send));
}

/// Starts the node's broker tasks: the ordered outgoing queue, the receiver, and the
/// announcer. `host` is the node (held weakly).
pub(crate) fn start<H: Host>(
    host: Weak<H>,
    config: &ServerConfig,
    outgoing: mpsc::Receiver<Outgoing>,
) {
    let Some(strong) = host.upgrade() else {
        return;
    };
    let Some(cluster) = strong.cluster() else {
        return;
    };
    let mut initial: Vec<String> = vec![
        cluster.channels.ws_all.to_string(),
        cluster.channels.ws_node(&cluster.node).to_string(),
        cluster.channels.s2s_all.to_string(),
        cluster.channels.s2s_node(&cluster.node).to_string(),
    ];
    initial.extend(
        config
            .preset_namespaces
            .iter()
            .map(|ns| cluster.channels.room(ns)),
    );
    let messages = cluster.broker.messages();
    tokio::spawn(run_outgoing(host.clone(), initial, outgoing));
    tokio::spawn(run_announcer(host.clone(), cluster.announce_interval));
    match messages {
        Ok(rx) => {
            tokio::spawn(receive(host, rx));
        }
        Err(e) => strong.report(format!("broker: {e}")),
    }
}

/// The outgoing task: subscribes the initial channels, says hello, then hands queued
/// operations to the broker in order. A batch of operations is started in order, then
/// awaited in that order.
async fn run_outgoing<H: Host>(
    host: Weak<H>,
    initial: Vec<String>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let Some(broker) = host
        .upgrade()
        .and_then(|h| h.cluster().map(|c| Arc::clone(&c.broker)))
    else {
        return;
    };
    let report = |message: String| {
        tracing::warn!(%message, "broker error");
        if let Some(host) = host.upgrade() {
            host.report(message);
        }
    };
    for channel in initial {
        if let Err(e) = broker.subscribe(&channel).await {
            report(format!("subscribe {channel}: {e}"));
        }
    }
    // Subscribed: now say hello, so the others answer with their own announcements.
    if let Some(cluster) = host.upgrade().as_deref().and_then(H::cluster) {
        cluster.announce(true);
        cluster.hello_sent.store(true, Ordering::Release);
    }
    let mut batch: Vec<Outgoing> = Vec::with_capacity(OUTGOING_BATCH);
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    while outgoing.recv_many(&mut batch, OUTGOING_BATCH).await > 0 {
        let mut then: Vec<Then> = Vec::with_capacity(batch.len());
        let futures: Vec<_> = batch
            .drain(..)
            .filter_map(|op| {
                let (future, next) = match op {
                    Outgoing::Publish(channel, bytes) => {
                        (broker.publish(&channel, bytes), Then::Nothing)
                    }
                    Outgoing::PublishRecorded(r) => {
                        let r = *r;
                        let envelope = r.envelope.clone();
                        let future =
                            broker.publish_recorded(&r.channel, &r.key, r.envelope, r.window);
                        (future, Then::DeliverIfRefused(envelope))
                    }
                    Outgoing::Subscribe(channel) => {
                        (broker.subscribe(&channel), Then::NoteSubscribe(channel))
                    }
                    Outgoing::Unsubscribe(channel) => {
                        (broker.unsubscribe(&channel), Then::NoteUnsubscribe(channel))
                    }
                    Outgoing::Flush(done) => {
                        flushed.push(done);
                        return None;
                    }
                };
                then.push(next);
                Some(future)
            })
            .collect();
        // Awaited one after the other, in call order: a broker may send when its future is
        // first polled (the hub, NATS), and `join_all` polls in no fixed order once the task's
        // budget runs out. A broker that queues at call time (Redis) still pipelines the batch.
        let mut results = Vec::with_capacity(futures.len());
        for future in futures {
            results.push(future.await);
        }
        let node = host.upgrade();
        for (result, next) in results.into_iter().zip(then) {
            if let Err(e) = &result {
                report(format!("broker: {e}"));
            }
            if let (Some(node), false) = (&node, matches!(next, Then::Nothing)) {
                next.follow(node, result.is_ok());
            }
        }
        drop(node);
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// What follows an outgoing operation once the broker answered it.
enum Then {
    Nothing,
    /// A recorded message the broker refused still reaches this node's sockets, live and
    /// without a position (it is in no history).
    DeliverIfRefused(Bytes),
    NoteSubscribe(String),
    NoteUnsubscribe(String),
}

impl Then {
    fn follow<H: Host>(self, host: &Arc<H>, ok: bool) {
        let Some(cluster) = host.cluster() else {
            return;
        };
        match self {
            Then::Nothing => {}
            Then::DeliverIfRefused(envelope) if !ok => {
                if let Ok(Envelope {
                    body: Body::Deliver { target, frame },
                    ..
                }) = cluster.codec.decode(&envelope)
                {
                    host.unrecorded(&target, &frame);
                }
            }
            Then::DeliverIfRefused(_) => {}
            Then::NoteSubscribe(channel) => cluster.note_subscription(&channel, !ok),
            Then::NoteUnsubscribe(channel) => cluster.note_subscription(&channel, false),
        }
    }
}

/// The announcer: periodic announcements and expiry of silent peers.
async fn run_announcer<H: Host>(host: Weak<H>, interval: Duration) {
    let Some(stop) = host
        .upgrade()
        .and_then(|h| h.cluster().map(|c| c.stop.clone()))
    else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let Some(host) = host.upgrade() else {
            return;
        };
        let Some(cluster) = host.cluster() else {
            return;
        };
        // Not before the hello: until then this node is not subscribed to its own channels,
        // and what another node sends it on learning of it (a request, the presence it
        // should know) would be lost.
        if !cluster.hello_sent.load(Ordering::Acquire) {
            continue;
        }
        cluster.announce(false);
        for node in cluster.expire_peers(Instant::now()) {
            tracing::info!(node = %node, "node expired");
            host.peer_changed(&node, false);
        }
    }
}

impl Cluster {
    /// Forgets the peers silent for longer than their time to live, and old departures;
    /// returns the expired peers.
    fn expire_peers(&self, now: Instant) -> Vec<Arc<str>> {
        let expired: Vec<Arc<str>> = lock(&self.peers)
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) > p.ttl)
            .map(|(n, _)| Arc::clone(n))
            .collect();
        let expired = expired
            .into_iter()
            .filter(|node| self.forget_peer(node))
            .collect();
        let retention = self.departed_retention();
        lock(&self.departed).retain(|_, at| now.duration_since(*at) < retention);
        expired
    }

    /// Stops announcing and announces this node's departure (on graceful shutdown).
    ///
    /// The departure goes through the ordered outgoing queue, after everything this node
    /// sent before (announcements included), and is awaited (at most a second) so that the
    /// other nodes hear of it before this node stops.
    pub(crate) async fn leave(&self) {
        self.stop();
        let Some(bytes) = self.envelope(Body::Leave) else {
            return;
        };
        let channel = Arc::clone(&self.channels.s2s_all);
        let publish = Outgoing::Publish(channel, bytes);
        match self
            .queue_confirmed(Some(publish), Duration::from_secs(1))
            .await
        {
            Ok(()) => {}
            Err(Unconfirmed::Closed) => {
                tracing::debug!("could not announce departure: broker queue closed")
            }
            Err(Unconfirmed::TimedOut | Unconfirmed::Refused) => {
                tracing::debug!("announcing departure timed out")
            }
        }
    }
}

/// The receive task: handles broker messages in batches, flushing written sockets after
/// each batch.
async fn receive<H: Host>(host: Weak<H>, mut messages: mpsc::Receiver<BrokerMessage>) {
    let mut buf: Vec<BrokerMessage> = Vec::with_capacity(INCOMING_BATCH);
    let Some(stop) = host
        .upgrade()
        .and_then(|h| h.cluster().map(|c| c.stop.clone()))
    else {
        return;
    };
    loop {
        let n = tokio::select! {
            n = messages.recv_many(&mut buf, INCOMING_BATCH) => n,
            _ = stop.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        let Some(host) = host.upgrade() else {
            return;
        };
        let Some(cluster) = host.cluster() else {
            return;
        };
        let _batch = Batch::begin();
        for message in buf.drain(..) {
            // Handlers are guarded one by one; this catches a panic anywhere else in handling
            // one message, so the receive loop outlives it.
            let one = std::panic::AssertUnwindSafe(|| handle(&host, cluster, &message));
            if let Err(panic) = std::panic::catch_unwind(one) {
                host.panicked(&message.channel, panic.as_ref());
            }
        }
    }
}

/// Handles one broker message: a custom channel's goes to the host as it is; an envelope is
/// decoded, checked against echo and duplicates, and applied.
fn handle<H: Host>(host: &Arc<H>, cluster: &Cluster, message: &BrokerMessage) {
    if !cluster.channels.is_internal(&message.channel) {
        host.channel_message(message);
        return;
    }
    let envelope = match cluster.codec.decode(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            let text = match e {
                EnvelopeError::CompressionMismatch => format!(
                    "compression mismatch on {}: another node compresses envelopes but this node has compression off",
                    message.channel
                ),
                other => format!("undecodable envelope on {}: {other}", message.channel),
            };
            tracing::warn!(%text, "dropped envelope");
            host.report(text);
            return;
        }
    };
    if envelope.origin == *cluster.node {
        if envelope.incarnation != cluster.incarnation {
            cluster.saw_own_name(host, envelope.incarnation);
            return;
        }
        // A recorded message comes back to its sender too: it is delivered here only now,
        // with its position.
        if let (Some(position), Body::Deliver { target, frame }) =
            (&message.position, &envelope.body)
        {
            host.deliver_positioned(target, frame, position);
        }
        return;
    }
    let origin: Arc<str> = Arc::from(envelope.origin.as_str());
    if !cluster.first_sight(&origin, envelope.incarnation, envelope.seq) {
        cluster.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    cluster.received.fetch_add(1, Ordering::Relaxed);
    if let (Some(position), Body::Deliver { target, frame }) = (&message.position, &envelope.body) {
        cluster.deliveries.fetch_add(1, Ordering::Relaxed);
        host.deliver_positioned(target, frame, position);
        return;
    }
    apply(host, cluster, &origin, envelope.incarnation, envelope.body);
}

/// Applies one envelope from `origin`.
fn apply<H: Host>(
    host: &Arc<H>,
    cluster: &Cluster,
    origin: &Arc<str>,
    incarnation: u64,
    body: Body,
) {
    match body {
        Body::Deliver { target, frame } => {
            cluster.deliveries.fetch_add(1, Ordering::Relaxed);
            host.deliver(&target, &frame);
        }
        Body::Takeover { id, claim, conn } => {
            let id: Arc<str> = Arc::from(id);
            let remote = Claim {
                at: claim,
                node: Arc::clone(origin),
                conn,
            };
            match host.taken_over(&id, &remote) {
                // Ours is the later bind: the origin closes its socket when it hears ours
                // (again: it may have bound before ours reached it).
                Some(kept) => cluster.announce_takeover(&id, kept.at, kept.conn),
                None => cluster.located(id, origin, claim),
            }
        }
        Body::Gone { id } => {
            let mut locations = lock(&cluster.locations);
            if locations
                .get(id.as_str())
                .is_some_and(|l| l.node == *origin)
            {
                locations.remove(id.as_str());
            }
        }
        Body::RemoveRoom { namespace, room } => host.remove_room(&namespace, &room),
        Body::Presence {
            namespace,
            room,
            id,
            joined,
        } => {
            let change = Membership {
                namespace: namespace.into(),
                room: room.into(),
                id: id.into(),
                joined,
            };
            host.presence(origin, change);
        }
        Body::ServerEvent {
            event,
            payload,
            request,
            targets,
        } => {
            if targets.is_empty() || targets.iter().any(|t| *t == *cluster.node) {
                host.server_event(origin, &event, payload, request);
            }
        }
        Body::ServerReply {
            request,
            to,
            payload,
        } => {
            if to == *cluster.node {
                host.server_reply(request, origin, payload);
            }
        }
        Body::Announce {
            ttl_ms,
            compression,
            hello,
        } => cluster.on_announce(host, origin, incarnation, ttl_ms, compression, hello),
        Body::Leave => {
            lock(&cluster.departed).insert((Arc::clone(origin), incarnation), Instant::now());
            if cluster.forget_peer(origin) {
                tracing::info!(node = %origin, "node left");
                host.peer_changed(origin, false);
            }
        }
    }
}

impl Cluster {
    /// Another run uses this node's name: said loudly once per episode (an episode ends
    /// when that run has been silent for the node time to live).
    fn saw_own_name<H: Host>(&self, host: &Arc<H>, incarnation: u64) {
        let now = Instant::now();
        let previous = lock(&self.name_conflict).replace(now);
        if previous.is_some_and(|at| now.duration_since(at) <= self.node_ttl) {
            return;
        }
        tracing::error!(
            node = %self.node,
            other_incarnation = incarnation,
            "another live node uses this node's name: messages for either reach both and each drops the other's as its own; give every node its own name"
        );
        host.name_conflict(&self.node);
    }

    /// Whether another run with this node's name was heard within the node time to live.
    pub(crate) fn has_name_conflict(&self) -> bool {
        lock(&self.name_conflict).is_some_and(|at| at.elapsed() <= self.node_ttl)
    }

    /// Whether this is the first time sequence number `seq` of `origin`'s run `incarnation`
    /// is seen (the broker may deliver a message twice).
    fn first_sight(&self, origin: &Arc<str>, incarnation: u64, seq: u64) -> bool {
        lock(&self.seen)
            .entry((Arc::clone(origin), incarnation))
            .or_insert_with(SeenWindow::new)
            .accept(seq)
    }

    /// A peer's announcement: checks its compression setting, records it alive, and answers
    /// a newcomer's hello with this node's own announcement.
    fn on_announce<H: Host>(
        &self,
        host: &Arc<H>,
        origin: &Arc<str>,
        incarnation: u64,
        ttl_ms: u64,
        compression: bool,
        hello: bool,
    ) {
        let ours = self.codec.compress_above.is_some();
        if compression != ours {
            let on_off = |on: bool| if on { "on" } else { "off" };
            host.report(format!(
                "compression mismatch: node {origin} has compression {}, this node {}; all nodes must agree",
                on_off(compression),
                on_off(ours),
            ));
        }
        if lock(&self.departed).contains_key(&(Arc::clone(origin), incarnation)) {
            tracing::debug!(node = %origin, "announcement of a departed run ignored");
            return;
        }
        let peer = Peer {
            last_seen: Instant::now(),
            ttl: Duration::from_millis(ttl_ms.max(1)),
            incarnation,
        };
        let previous = lock(&self.peers).insert(Arc::clone(origin), peer);
        let new = previous.is_none();
        let restarted = previous.filter(|p| p.incarnation != incarnation);
        if let Some(old) = &restarted {
            // The node restarted before it expired: its previous run left (with what was
            // learnt from it: the duplicate window, where its ids lived, its members), and a
            // new run joined, which learns what a new node learns.
            tracing::info!(node = %origin, "node restarted");
            lock(&self.seen).remove(&(Arc::clone(origin), old.incarnation));
            lock(&self.locations).retain(|_, l| l.node != *origin);
            host.peer_changed(origin, false);
        }
        if new || restarted.is_some() {
            if new {
                tracing::info!(node = %origin, "node joined");
            }
            host.peer_changed(origin, true);
        }
        if hello || new || restarted.is_some() {
            self.announce(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Claim, SeenWindow};

    #[test]
    fn the_later_claim_wins_then_the_node_then_the_connection() {
        let claim = |at, node: &str, conn| Claim {
            at,
            node: node.into(),
            conn,
        };
        assert!(claim(2, "a", 1).beats(&claim(1, "b", 9)));
        assert!(!claim(1, "b", 9).beats(&claim(2, "a", 1)));
        assert!(claim(5, "b", 1).beats(&claim(5, "a", 9)));
        assert!(claim(5, "a", 2).beats(&claim(5, "a", 1)));
        // Exactly one of two claims wins.
        let (x, y) = (claim(5, "a", 2), claim(5, "a", 2));
        assert!(!x.beats(&y) && !y.beats(&x), "a claim does not beat itself");
        // A takeover from a node without claims always wins.
        assert!(!claim(u64::MAX, "z", 9).beats(&claim(0, "a", 1)));
    }

    #[test]
    fn window_drops_duplicates_in_any_order() {
        let mut w = SeenWindow::new();
        assert!(w.accept(1));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(2));
        assert!(!w.accept(1));
        assert!(w.accept(100_000));
        // Far behind the window: refused rather than risk a duplicate.
        assert!(!w.accept(2));
        assert!(w.accept(99_999));
        assert!(!w.accept(99_999));
        // Slots reused after the window moved on are clear.
        let mut w = SeenWindow::new();
        for s in 1..200_000u64 {
            assert!(w.accept(s));
        }
        for s in 150_000..200_000u64 {
            assert!(!w.accept(s));
        }
    }
}

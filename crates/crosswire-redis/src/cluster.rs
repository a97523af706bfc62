//! Redis Cluster mode: the slot map, where each channel is published and subscribed, the
//! publishes parked while their shard has no healthy master, and the task that keeps all of
//! it current.
//!
//! - **Publishing.** A channel's slot is its name's CRC16 (honouring a `{hash tag}`); its
//!   messages go as `SPUBLISH` to the master serving the slot, queued at call time on that
//!   master's publisher like any publish. While the master is unhealthy (killed, before a
//!   replica is promoted) or a batch was refused (`MOVED`, `CLUSTERDOWN`), the messages are
//!   *parked* in call order and released to the slot's new master once the slot map shows a
//!   healthy one; a message parked longer than twice the command timeout fails.
//! - **Subscribing.** Each channel is `SSUBSCRIBE`d on one server of its shard, a replica when
//!   there is one: Redis propagates sharded messages to replicas, and a replica promoted when
//!   its master dies keeps its subscribers, so a master failover loses no message for them.
//!   A channel moves to another server of its shard when its server's subscribe connection is
//!   down and another one's is up, when the slot map no longer lists that server for the slot,
//!   or when Redis unsubscribes it (`sunsubscribe` pushed when a slot migrates away).
//! - **The slot map** is read with `CLUSTER SLOTS` on any connected publish connection every
//!   ping interval, at once when something above asks (a failed batch, a lost subscriber, a
//!   pushed unsubscribe), and every 100 ms while anything waits for it. Servers it names that
//!   the broker does not know yet get their own publish and subscribe connections.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::RedisNodeConfig;
use crate::shared::{lock, read, write, Node, PublishJob, Shared, SubscribeCommand};

/// Number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// How often the slot map is read while publishes are parked or the map is incomplete.
const FAST_REFRESH: Duration = Duration::from_millis(100);

/// The hash slot of a key or shard channel: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or of the whole name.
pub(crate) fn slot_of(name: &[u8]) -> u16 {
    let tagged = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(name)) % SLOTS
}

/// One range of slots and the servers that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
    /// `host:port` of the master.
    pub(crate) master: Arc<str>,
    /// `host:port` of each replica.
    pub(crate) replicas: Vec<Arc<str>>,
}

impl SlotRange {
    fn serves(&self, name: &str) -> bool {
        *self.master == *name || self.replicas.iter().any(|r| **r == *name)
    }
}

/// The slot map from `CLUSTER SLOTS`, ranges sorted by their first slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    pub(crate) ranges: Vec<SlotRange>,
}

impl Topology {
    /// Parses a `CLUSTER SLOTS` reply; `asked` is the host of the server that answered (an
    /// empty host in the reply means that one).
    pub(crate) fn parse(reply: &Value, asked: &str) -> Result<Self, String> {
        let Value::Array(items) = reply else {
            return Err(format!("CLUSTER SLOTS answered {reply:?}"));
        };
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(fields) = item else {
                return Err("CLUSTER SLOTS entry is not an array".into());
            };
            let bound = |i: usize| match fields.get(i) {
                Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|n| *n < SLOTS),
                _ => None,
            };
            let (Some(start), Some(end)) = (bound(0), bound(1)) else {
                return Err("CLUSTER SLOTS entry without a valid slot range".into());
            };
            let mut servers = fields[2..].iter().filter_map(|s| address(s, asked));
            let Some(master) = servers.next() else {
                return Err(format!("slots {start}-{end} have no master"));
            };
            ranges.push(SlotRange {
                start: start.min(end),
                end: end.max(start),
                master,
                replicas: servers.collect(),
            });
        }
        ranges.sort_by_key(|r| r.start);
        Ok(Self { ranges })
    }

    /// The range holding `slot`.
    pub(crate) fn range(&self, slot: u16) -> Option<&SlotRange> {
        let i = self.ranges.partition_point(|r| r.start <= slot);
        self.ranges[..i].last().filter(|r| slot <= r.end)
    }

    /// Whether every slot is served.
    pub(crate) fn complete(&self) -> bool {
        let mut next = 0u32;
        for range in &self.ranges {
            if u32::from(range.start) > next {
                return false;
            }
            next = next.max(u32::from(range.end) + 1);
        }
        next == u32::from(SLOTS)
    }

    /// Every server named, masters first.
    fn servers(&self) -> impl Iterator<Item = &Arc<str>> {
        let masters = self.ranges.iter().map(|r| &r.master);
        masters.chain(self.ranges.iter().flat_map(|r| r.replicas.iter()))
    }
}

/// `host:port` of one server entry `[host, port, id, …]` of `CLUSTER SLOTS`.
fn address(server: &Value, asked: &str) -> Option<Arc<str>> {
    let Value::Array(fields) = server else {
        return None;
    };
    let host = match fields.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let Value::Int(port) = fields.get(1)? else {
        return None;
    };
    let host = if host.is_empty() || host == "?" {
        asked
    } else {
        &host
    };
    Some(Arc::from(format!("{host}:{port}")))
}

/// Publishes waiting for a healthy master, in call order.
#[derive(Default)]
struct Parked {
    jobs: VecDeque<(u16, PublishJob)>,
    /// How many jobs of each slot are parked: a new publish to such a slot parks behind them.
    slots: HashMap<u16, usize>,
}

impl Parked {
    fn push(&mut self, slot: u16, job: PublishJob) {
        *self.slots.entry(slot).or_default() += 1;
        self.jobs.push_back((slot, job));
    }

    fn took(&mut self, slot: u16) {
        if let Some(n) = self.slots.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                self.slots.remove(&slot);
            }
        }
    }
}

/// The cluster mode's part of the broker state.
pub(crate) struct ClusterState {
    topology: RwLock<Topology>,
    parked: Mutex<Parked>,
    /// Channel → the server whose subscribe connection carries it.
    assigned: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Channels Redis unsubscribed by itself, with the server that dropped them: they move to
    /// another server of their shard as soon as the slot map names one.
    moving: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Asks the topology task to read the slot map now.
    refresh: Notify,
    /// The first seed's settings (credentials, db, TLS), for the servers found later.
    template: RedisNodeConfig,
}

impl ClusterState {
    pub(crate) fn new(template: RedisNodeConfig) -> Self {
        Self {
            topology: RwLock::new(Topology::default()),
            parked: Mutex::new(Parked::default()),
            assigned: Mutex::new(HashMap::new()),
            moving: Mutex::new(HashMap::new()),
            refresh: Notify::new(),
            template,
        }
    }

    /// Asks for the slot map to be read again now.
    pub(crate) fn refresh_now(&self) {
        self.refresh.notify_one();
    }

    /// The master serving `channel`'s slot, by the last slot map.
    pub(crate) fn master_of(&self, channel: &str) -> Option<Arc<str>> {
        let slot = slot_of(channel.as_bytes());
        read(&self.topology)
            .range(slot)
            .map(|r| Arc::clone(&r.master))
    }

    /// The channels whose subscriptions `node` carries.
    pub(crate) fn channels_of(&self, node: &str) -> Vec<Arc<str>> {
        lock(&self.assigned)
            .iter()
            .filter(|(_, at)| ***at == *node)
            .map(|(channel, _)| Arc::clone(channel))
            .collect()
    }

    /// The server carrying `channel`, if it is assigned.
    pub(crate) fn assignment(&self, channel: &str) -> Option<Arc<str>> {
        lock(&self.assigned).get(channel).cloned()
    }

    /// Forgets `channel`'s subscription (unsubscribed); the server that carried it.
    pub(crate) fn unassign(&self, channel: &str) -> Option<Arc<str>> {
        lock(&self.moving).remove(channel);
        lock(&self.assigned).remove(channel)
    }

    /// Picks the server to carry `channel` (see the module docs) and records it.
    /// An assigned channel keeps its server (moving is [`ClusterState::reassign`]'s).
    pub(crate) fn assign(&self, shared: &Shared, channel: &Arc<str>) -> Option<Arc<Node>> {
        let nodes = read(&shared.nodes);
        let mut assigned = lock(&self.assigned);
        if let Some(current) = assigned.get(channel) {
            return nodes.iter().find(|n| n.name == *current).cloned();
        }
        drop(assigned);
        drop(nodes);
        let chosen = self.choose_subscriber(shared, channel, None, None)?;
        assigned = lock(&self.assigned);
        let name = assigned
            .entry(Arc::clone(channel))
            .or_insert_with(|| Arc::clone(&chosen.name));
        if *name == chosen.name {
            return Some(chosen);
        }
        let name = Arc::clone(name);
        drop(assigned);
        read(&shared.nodes).iter().find(|n| n.name == name).cloned()
    }

    /// A server of `channel`'s shard for its subscription, other than `avoid`: a replica with
    /// a healthy subscribe connection, else the master if healthy, else (none healthy)
    /// `current` or the first replica or the master, to be subscribed when it comes up.
    fn choose_subscriber(
        &self,
        shared: &Shared,
        channel: &str,
        current: Option<&Arc<str>>,
        avoid: Option<&Arc<str>>,
    ) -> Option<Arc<Node>> {
        let slot = slot_of(channel.as_bytes());
        let range = read(&self.topology).range(slot).cloned()?;
        let nodes = read(&shared.nodes);
        let find = |name: &str| nodes.iter().find(|n| *n.name == *name).cloned();
        let healthy = |n: &Arc<Node>| n.subscriber_healthy.load(Ordering::Acquire);
        let candidates = range
            .replicas
            .iter()
            .chain(std::iter::once(&range.master))
            .filter(|n| Some(*n) != avoid);
        let current = current.filter(|c| Some(*c) != avoid);
        // A healthy replica still serving the slot keeps its subscriptions; so does a healthy
        // master while no replica is up (a subscription moves to a replica as soon as one is).
        let replica_up = || {
            range
                .replicas
                .iter()
                .filter(|n| Some(*n) != avoid)
                .filter_map(|n| find(n))
                .any(|n| healthy(&n))
        };
        if let Some(node) = current
            .filter(|c| range.serves(c))
            .and_then(|c| find(c))
            .filter(healthy)
        {
            if node.name != range.master || !replica_up() {
                return Some(node);
            }
        }
        if let Some(node) = candidates.clone().filter_map(|n| find(n)).find(healthy) {
            return Some(node);
        }
        current
            .filter(|c| range.serves(c))
            .and_then(|c| find(c))
            .or_else(|| candidates.filter_map(|n| find(n)).next())
    }

    /// Queues `job` on `channel`'s master when it is healthy and nothing of that slot is
    /// parked; parks it otherwise.
    pub(crate) fn submit(&self, shared: &Shared, job: PublishJob) {
        let slot = slot_of(job.channel.as_bytes());
        let mut parked = lock(&self.parked);
        let job = if parked.slots.contains_key(&slot) {
            job
        } else {
            match self.healthy_master(shared, slot) {
                Some(node) => match Shared::enqueue(&node, job) {
                    None => return,
                    Some(job) => job,
                },
                None => job,
            }
        };
        parked.push(slot, job);
        drop(parked);
        self.refresh_now();
    }

    /// Parks a job whose batch failed or whose master went down.
    pub(crate) fn park(&self, job: PublishJob) {
        let slot = slot_of(job.channel.as_bytes());
        lock(&self.parked).push(slot, job);
        self.refresh_now();
    }

    fn healthy_master(&self, shared: &Shared, slot: u16) -> Option<Arc<Node>> {
        let master = read(&self.topology)
            .range(slot)
            .map(|r| Arc::clone(&r.master))?;
        read(&shared.nodes)
            .iter()
            .find(|n| n.name == master && n.publisher_healthy.load(Ordering::Acquire))
            .cloned()
    }

    /// Hands parked jobs to their slots' healthy masters, in order; fails those parked too
    /// long. Whether any is still parked.
    fn release(&self, shared: &Shared) -> bool {
        let mut parked = lock(&self.parked);
        let mut kept = VecDeque::with_capacity(parked.jobs.len());
        let mut blocked = HashSet::new();
        while let Some((slot, mut job)) = parked.jobs.pop_front() {
            if job.started.elapsed() >= shared.config.command_timeout * 2 {
                parked.took(slot);
                let error = format!("no healthy master for {:?} in time", job.channel);
                job.finish(Err(crosswire_core::BrokerError::Backend(error)));
                continue;
            }
            if !blocked.contains(&slot) {
                if let Some(node) = self.healthy_master(shared, slot) {
                    job.tried.push(Arc::clone(&node.name));
                    match Shared::enqueue(&node, job) {
                        None => {
                            node.counters.retries.fetch_add(1, Ordering::Relaxed);
                            parked.took(slot);
                            continue;
                        }
                        Some(back) => job = back,
                    }
                }
                blocked.insert(slot);
            }
            kept.push_back((slot, job));
        }
        parked.jobs = kept;
        !parked.jobs.is_empty()
    }

    /// Moves subscriptions whose server stopped serving their slot, or whose subscribe
    /// connection is down while another server of the shard is up, or that sit on a master
    /// while a replica is up. Whether some subscription still sits on a master whose shard
    /// lists a replica (it moves as soon as that replica's connection is up).
    fn reassign(&self, shared: &Shared) -> bool {
        // Channels asked for before the slot map was known (their subscribe failed) first.
        let missing: Vec<Arc<str>> = {
            let assigned = lock(&self.assigned);
            lock(&shared.channels)
                .iter()
                .filter(|c| !assigned.contains_key(*c))
                .cloned()
                .collect()
        };
        for channel in missing {
            if let Some(node) = self.assign(shared, &channel) {
                send_subscribe(&node, &channel);
            }
        }
        let assigned: Vec<(Arc<str>, Arc<str>)> = lock(&self.assigned)
            .iter()
            .map(|(c, n)| (Arc::clone(c), Arc::clone(n)))
            .collect();
        for (channel, current) in assigned {
            let dropped_by = lock(&self.moving).get(&channel).cloned();
            let chosen =
                self.choose_subscriber(shared, &channel, Some(&current), dropped_by.as_ref());
            let Some(chosen) = chosen else {
                continue;
            };
            if chosen.name == current && dropped_by.is_none() {
                continue;
            }
            lock(&self.moving).remove(&channel);
            {
                let mut map = lock(&self.assigned);
                // Unsubscribed meanwhile: nothing to move.
                let Some(at) = map.get_mut(&channel) else {
                    continue;
                };
                *at = Arc::clone(&chosen.name);
            }
            tracing::info!(%channel, from = %current, to = %chosen.name, "sharded subscription moved");
            send_subscribe(&chosen, &channel);
            // The old server may still hold it (a connection that was only slow to come up).
            if let Some(old) = read(&shared.nodes).iter().find(|n| n.name == current) {
                let (tx, _rx) = tokio::sync::oneshot::channel();
                let command = SubscribeCommand::Unsubscribe(Arc::clone(&channel), tx);
                let _ = old.subscribe_tx.send(command);
            }
        }
        let topology = read(&self.topology);
        lock(&self.assigned).iter().any(|(channel, at)| {
            topology
                .range(slot_of(channel.as_bytes()))
                .is_some_and(|r| r.master == *at && !r.replicas.is_empty())
        })
    }

    /// Redis unsubscribed `channel` on `node` by itself (its slot moved away): it is carried
    /// elsewhere after the next slot map.
    pub(crate) fn lost(&self, channel: &Arc<str>, node: &Arc<str>) {
        if self.assignment(channel).as_ref() != Some(node) {
            return;
        }
        tracing::info!(%channel, %node, "sharded subscription dropped by Redis; moving it");
        lock(&self.moving).insert(Arc::clone(channel), Arc::clone(node));
        self.refresh_now();
    }

    /// Whether the broker can publish and receive everywhere: the slot map is complete, every
    /// master's publish connection is healthy and so is every subscribe connection carrying
    /// a channel. Also the healthy publisher and subscriber counts and the server count.
    pub(crate) fn health(&self, shared: &Shared) -> (bool, usize, usize, usize) {
        let topology = read(&self.topology);
        let nodes = read(&shared.nodes);
        let find = |name: &str| nodes.iter().find(|n| *n.name == *name);
        let masters: HashSet<&Arc<str>> = topology.ranges.iter().map(|r| &r.master).collect();
        let publishers = masters
            .iter()
            .filter(|m| find(m).is_some_and(|n| n.publisher_healthy.load(Ordering::Acquire)))
            .count();
        let carriers: HashSet<Arc<str>> = lock(&self.assigned).values().cloned().collect();
        let subscribers = carriers
            .iter()
            .filter(|c| find(c).is_some_and(|n| n.subscriber_healthy.load(Ordering::Acquire)))
            .count();
        let healthy = topology.complete()
            && publishers == masters.len()
            && subscribers == carriers.len()
            && nodes
                .iter()
                .any(|n| n.subscriber_healthy.load(Ordering::Acquire));
        (healthy, publishers, subscribers, nodes.len())
    }
}

/// Asks `node`'s subscriber for `channel`; the outcome shows in its health (an unconfirmed
/// subscription ends the connection, which moves its channels again).
fn send_subscribe(node: &Node, channel: &Arc<str>) {
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let _ = node
        .subscribe_tx
        .send(SubscribeCommand::Subscribe(Arc::clone(channel), tx));
}

/// Keeps the slot map current (see the module docs); runs until the broker is dropped.
/// `add` starts the connections of a server found in the slot map.
pub(crate) async fn run(shared: Arc<Shared>, add: impl Fn(RedisNodeConfig)) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let interval = shared.config.redis_ping_interval;
    loop {
        let fast = match read_slots(&shared).await {
            Ok(topology) => {
                let complete = topology.complete();
                add_servers(&shared, cluster, &topology, &add);
                if *read(&cluster.topology) != topology {
                    tracing::info!(
                        ranges = topology.ranges.len(),
                        complete,
                        "redis cluster slot map"
                    );
                    *write(&cluster.topology) = topology;
                }
                let unsettled = cluster.reassign(&shared);
                let waiting = cluster.release(&shared) || !lock(&cluster.moving).is_empty();
                waiting || unsettled || !complete || !cluster.health(&shared).0
            }
            Err(error) => {
                tracing::debug!(%error, "redis cluster slot map not read");
                cluster.release(&shared);
                true
            }
        };
        let wait = if fast { FAST_REFRESH } else { interval };
        let _ = tokio::time::timeout(wait, cluster.refresh.notified()).await;
    }
}

/// Starts connections to the servers of `topology` not known yet.
fn add_servers(
    shared: &Shared,
    cluster: &ClusterState,
    topology: &Topology,
    add: &impl Fn(RedisNodeConfig),
) {
    let known: HashSet<Arc<str>> = read(&shared.nodes)
        .iter()
        .map(|n| Arc::clone(&n.name))
        .collect();
    for server in topology.servers() {
        if known.contains(server) {
            continue;
        }
        let Some((host, port)) = server.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else {
            continue;
        };
        add(cluster.template.at(host, port));
    }
}

/// `CLUSTER SLOTS` from the first connected publish connection that answers.
async fn read_slots(shared: &Shared) -> Result<Topology, String> {
    let connections: Vec<(Arc<str>, redis::aio::MultiplexedConnection)> = read(&shared.nodes)
        .iter()
        .filter_map(|n| {
            lock(&n.connection)
                .clone()
                .map(|c| (Arc::clone(&n.host), c))
        })
        .collect();
    let limit = shared.config.command_timeout;
    let mut last = String::from("no Redis Cluster server connected");
    for (host, mut connection) in connections {
        let started = Instant::now();
        let mut command = redis::cmd("CLUSTER");
        command.arg("SLOTS");
        let query = command.query_async::<Value>(&mut connection);
        match tokio::time::timeout(limit, query).await {
            Ok(Ok(reply)) => match Topology::parse(&reply, &host) {
                Ok(topology) if !topology.ranges.is_empty() => return Ok(topology),
                Ok(_) => last = format!("{host}: CLUSTER SLOTS is empty"),
                Err(e) => last = e,
            },
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("CLUSTER SLOTS not answered within {:?}", started.elapsed()),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b""), 0);
    }

    fn server(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn parses_the_slot_map() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                server("10.0.0.2", 7002),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                server("", 7001),
                server("10.0.0.3", 7003),
            ]),
        ]);
        let topology = Topology::parse(&reply, "10.0.0.1").unwrap();
        assert!(topology.complete());
        let first = topology.range(0).unwrap();
        assert_eq!(&*first.master, "10.0.0.1:7001");
        assert_eq!(first.replicas, vec![Arc::<str>::from("10.0.0.3:7003")]);
        assert_eq!(&*topology.range(16383).unwrap().master, "10.0.0.2:7002");
        assert_eq!(&*topology.range(5461).unwrap().master, "10.0.0.2:7002");
        let mut partial = topology.clone();
        partial.ranges.pop();
        assert!(!partial.complete());
        assert!(partial.range(16000).is_none());
        assert!(Topology::parse(&Value::Nil, "h").is_err());
        let bad = Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(99999)])]);
        assert!(Topology::parse(&bad, "h").is_err());
    }
}

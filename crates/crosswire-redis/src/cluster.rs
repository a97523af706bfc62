//! Redis Cluster mode in action (the state it acts on is in `slots`): where each channel is
//! published and subscribed, the publishes parked while their shard has no healthy master,
//! and the task that keeps the slot map current.
//!
//! - **Publishing.** A channel's slot is its name's CRC16 (honouring a `{hash tag}`); its
//!   messages go as `SPUBLISH` to the master serving the slot, queued at call time on that
//!   master's publisher like any publish. While the master is unhealthy (killed, before a
//!   replica is promoted) or a batch was refused (`MOVED`, `CLUSTERDOWN`), the messages are
//!   *parked* in call order and released to the slot's new master once the slot map shows a
//!   healthy one; a message parked longer than twice the command timeout fails.
//! - **Subscribing.** Each channel is `SSUBSCRIBE`d on one server of its shard: its master, or
//!   with [`ShardSubscriptions::Replicas`] a replica (Redis propagates sharded messages to
//!   replicas, and a replica promoted when its master dies keeps its subscribers, so a master
//!   failover loses nothing; the price is Redis's replication delay).
//!   A channel moves to another server of its shard when its server's subscribe connection is
//!   down and another one's is up, when the slot map no longer lists that server for the slot,
//!   or when Redis unsubscribes it (`sunsubscribe` pushed when a slot migrates away).
//! - **The slot map** is read with `CLUSTER SLOTS` on any connected publish connection every
//!   ping interval, at once when something above asks (a failed batch, a lost subscriber, a
//!   pushed unsubscribe), and every 100 ms while anything waits for it. Servers it names that
//!   the broker does not know yet get their own publish and subscribe connections.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::config::RedisNodeConfig;
use crate::config::ShardSubscriptions;
use crate::shared::{lock, read, write, Node, PublishJob, Shared, SubscribeCommand};
use crate::slots::{slot_of, ClusterState, SlotRange, Topology};

/// How often the slot map is read while publishes are parked or the map is incomplete.
const FAST_REFRESH: Duration = Duration::from_millis(100);

impl ClusterState {
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

    /// A server of `channel`'s shard for its subscription, other than `avoid`: a healthy one
    /// of the preferred kind ([`ShardSubscriptions`]: the master, or a replica), else a
    /// healthy one of the other kind, else (none healthy) `current` or the first one, to be
    /// subscribed when it comes up. A healthy `current` that still serves the slot stays
    /// unless it is of the other kind while one of the preferred kind is up.
    fn choose_subscriber(
        &self,
        shared: &Shared,
        channel: &str,
        current: Option<&Arc<str>>,
        avoid: Option<&Arc<str>>,
    ) -> Option<Arc<Node>> {
        let slot = slot_of(channel.as_bytes());
        let range = read(&self.topology).range(slot).cloned()?;
        let (preferred, other) = tiers(&range, shared.config.shard_subscriptions);
        let nodes = read(&shared.nodes);
        let find = |name: &Arc<str>| nodes.iter().find(|n| n.name == *name).cloned();
        let healthy = |n: &Arc<Node>| n.subscriber_healthy.load(Ordering::Acquire);
        let allowed = |n: &&Arc<str>| Some(*n) != avoid;
        let current = current.filter(allowed).filter(|c| range.serves(c));
        if let Some(node) = current.and_then(find).filter(healthy) {
            let preferred_up = preferred
                .iter()
                .filter(allowed)
                .filter_map(find)
                .any(|n| healthy(&n));
            if preferred.contains(&node.name) || !preferred_up {
                return Some(node);
            }
        }
        let candidates = || preferred.iter().chain(other.iter()).filter(allowed);
        if let Some(node) = candidates().filter_map(find).find(healthy) {
            return Some(node);
        }
        current
            .and_then(find)
            .or_else(|| candidates().filter_map(find).next())
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
    /// connection is down while another server of the shard is up, or that sit on a server of
    /// the other kind while one of the preferred kind is up. Whether some subscription still
    /// sits on a server of the other kind (it moves as soon as a preferred one is up).
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
        let choice = shared.config.shard_subscriptions;
        lock(&self.assigned).iter().any(|(channel, at)| {
            topology
                .range(slot_of(channel.as_bytes()))
                .is_some_and(|r| {
                    let (preferred, _) = tiers(r, choice);
                    !preferred.is_empty() && !preferred.contains(at)
                })
        })
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

/// The servers of `range` that carry its subscriptions by preference, and the others.
fn tiers(range: &SlotRange, choice: ShardSubscriptions) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    let master = vec![Arc::clone(&range.master)];
    match choice {
        ShardSubscriptions::Replicas => (range.replicas.clone(), master),
        _ => (master, range.replicas.clone()),
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

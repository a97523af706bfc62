//! The Redis Cluster slot map and the state of cluster mode that needs nothing above it:
//! where each channel is subscribed, the channels Redis dropped, and the publishes parked
//! while their shard has no healthy master. What acts on it (choosing servers, releasing
//! parked publishes, the task keeping the map current) is in `cluster`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use redis::Value;
use tokio::sync::Notify;

use crate::config::RedisNodeConfig;
use crate::job::PublishJob;
use crate::sync::{lock, read};

/// Number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

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
    pub(crate) fn serves(&self, name: &str) -> bool {
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
    pub(crate) fn servers(&self) -> impl Iterator<Item = &Arc<str>> {
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
pub(crate) struct Parked {
    pub(crate) jobs: VecDeque<(u16, PublishJob)>,
    /// How many jobs of each slot are parked: a new publish to such a slot parks behind them.
    pub(crate) slots: HashMap<u16, usize>,
}

impl Parked {
    pub(crate) fn push(&mut self, slot: u16, job: PublishJob) {
        *self.slots.entry(slot).or_default() += 1;
        self.jobs.push_back((slot, job));
    }

    pub(crate) fn took(&mut self, slot: u16) {
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
    pub(crate) topology: RwLock<Topology>,
    pub(crate) parked: Mutex<Parked>,
    /// Channel → the server whose subscribe connection carries it.
    pub(crate) assigned: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Channels Redis unsubscribed by itself, with the server that dropped them: they move to
    /// another server of their shard as soon as the slot map names one.
    pub(crate) moving: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Asks the topology task to read the slot map now.
    pub(crate) refresh: Notify,
    /// The first seed's settings (credentials, db, TLS), for the servers found later.
    pub(crate) template: RedisNodeConfig,
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

    /// Parks a job whose batch failed or whose master went down.
    pub(crate) fn park(&self, job: PublishJob) {
        let slot = slot_of(job.channel.as_bytes());
        lock(&self.parked).push(slot, job);
        self.refresh_now();
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

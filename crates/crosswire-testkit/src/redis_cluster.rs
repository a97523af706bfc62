//! A real Redis Cluster (3 masters, 3 replicas) of `redis-server` processes on loopback.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, ping, redis_command, spawn_until_ready, RedisServer};

/// Number of hash slots of a Redis Cluster.
const SLOTS: u32 = 16_384;
/// Masters of the cluster (each with one replica).
const MASTERS: usize = 3;
/// How long [`RedisCluster::start`] waits for the new cluster to settle.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Read timeout of one command of the tiny RESP client.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

static CLUSTER_DIRS: AtomicU64 = AtomicU64::new(0);

/// A Redis Cluster of 3 masters and 3 replicas: six `redis-server` processes on free
/// loopback ports, each in its own temporary directory (its `nodes.conf` there), killed and
/// removed on drop.
///
/// Every node runs with `--save "" --appendonly no` (no data on disk; only the cluster
/// configuration is kept, so a node [restarted](RedisCluster::restart) rejoins as the same
/// node), `--cluster-node-timeout` (default 1,000 ms), `--cluster-replica-validity-factor 0`
/// (a replica may always take over, however long its master was silent) and
/// `--repl-diskless-sync-delay 0` (replicas sync at once) and `--repl-ping-replica-period 1`
/// (`CLUSTER SLOTS` lists a replica only once its replication offset is not 0, which on an
/// idle master takes the first replication PING: 10 s by default). The cluster bus of each node
/// listens on a free port of its own (`--cluster-port`). A node is named by its client port.
///
/// ```no_run
/// use std::time::Duration;
/// use crosswire_testkit::RedisCluster;
///
/// let mut cluster = RedisCluster::start().expect("cluster");
/// let master = cluster.master_of("k").expect("a master");
/// cluster.kill(master);
/// assert!(cluster.wait_failover(master, Duration::from_secs(20)));
/// assert_ne!(cluster.master_of("k"), Some(master));
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    root: PathBuf,
    node_timeout: Duration,
    nodes: Vec<Node>,
    seeds: Vec<u16>,
}

#[derive(Debug)]
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// One range of hash slots as `CLUSTER SLOTS` shows it: its master's port and its
/// replicas' ports (failed replicas are not listed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SlotRange {
    start: u32,
    end: u32,
    master: u16,
    replicas: Vec<u16>,
}

impl RedisCluster {
    /// Whether `redis-server` and `redis-cli` are on `PATH`. Tests that need them fail (with
    /// a message) when not.
    pub fn available() -> bool {
        RedisServer::available()
            && Command::new("redis-cli")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Starts a cluster with the default node timeout of 1,000 ms (see
    /// [`RedisCluster::start_with_node_timeout`]).
    pub fn start() -> io::Result<Self> {
        Self::start_with_node_timeout(Duration::from_millis(1000))
    }

    /// Starts six nodes, creates the cluster (`redis-cli --cluster create … --cluster-replicas
    /// 1`) and waits (at most 30 s) until [`RedisCluster::wait_ready`] holds: every node
    /// sees all 16,384 slots in 3 ranges, each with a master and one replica whose link to
    /// it is up. `node_timeout` is `--cluster-node-timeout`: how long a silent node takes to
    /// be marked failed (a failover takes about twice that).
    pub fn start_with_node_timeout(node_timeout: Duration) -> io::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "crosswire-redis-cluster-{}-{}",
            std::process::id(),
            CLUSTER_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cluster = Self {
            root,
            node_timeout,
            nodes: Vec::new(),
            seeds: Vec::new(),
        };
        // Twelve distinct ports: a client and a bus port per node.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 2 * 2 * MASTERS {
            let port = free_port()?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        for pair in ports.chunks(2) {
            let (port, bus_port) = (pair[0], pair[1]);
            let dir = cluster.root.join(format!("node-{port}"));
            std::fs::create_dir_all(&dir)?;
            cluster.nodes.push(Node {
                port,
                bus_port,
                dir,
                child: None,
            });
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.create()?;
        if !cluster.wait_ready(READY_TIMEOUT) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the Redis Cluster did not settle within {READY_TIMEOUT:?}: {:?}",
                    cluster.views()
                ),
            ));
        }
        cluster.seeds = cluster.masters();
        Ok(cluster)
    }

    /// `redis-cli --cluster create` over the six nodes.
    fn create(&self) -> io::Result<()> {
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let node = &self.nodes[i];
        let port = node.port;
        let args: Vec<String> = [
            "--dir",
            &node.dir.to_string_lossy(),
            "--logfile",
            "redis.log",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &node.dir.join("nodes.conf").to_string_lossy(),
            "--cluster-port",
            &node.bus_port.to_string(),
            "--cluster-node-timeout",
            &self.node_timeout.as_millis().to_string(),
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
            "--repl-ping-replica-period",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = spawn_until_ready(
            || redis_command(port, &args),
            || ping(port).is_ok(),
            "a Redis Cluster node did not answer PING within 10 s",
        )?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    fn index(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The client ports of all six nodes, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:<port>` of all six nodes, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.ports().into_iter().map(url).collect()
    }

    /// `redis://127.0.0.1:<port>` of the three masters the cluster started with (what a
    /// client is typically given to discover the rest).
    pub fn seed_urls(&self) -> Vec<String> {
        self.seeds.iter().copied().map(url).collect()
    }

    /// Whether the node on `port` is running.
    pub fn is_running(&self, port: u16) -> bool {
        self.index(port)
            .is_some_and(|i| self.nodes[i].child.is_some())
    }

    /// The current masters (ports, sorted), as a live node's `CLUSTER SLOTS` shows them;
    /// empty when no live node answers.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self.view().iter().map(|r| r.master).collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }

    /// The current replicas that are not failed (ports, sorted), as a live node's
    /// `CLUSTER SLOTS` shows them.
    pub fn replicas(&self) -> Vec<u16> {
        let mut replicas: Vec<u16> = self
            .view()
            .iter()
            .flat_map(|r| r.replicas.iter().copied())
            .collect();
        replicas.sort_unstable();
        replicas.dedup();
        replicas
    }

    /// The port of the master serving `key` (its `CLUSTER KEYSLOT`), as a live node sees
    /// it now.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        self.range_of(key).map(|r| r.master)
    }

    /// The port of a (non-failed) replica of the master serving `key`, as a live node sees
    /// it now.
    pub fn replica_of(&self, key: &str) -> Option<u16> {
        self.range_of(key).and_then(|r| r.replicas.first().copied())
    }

    fn range_of(&self, key: &str) -> Option<SlotRange> {
        let port = self.live_ports().into_iter().next()?;
        let slot = match command(port, &["CLUSTER", "KEYSLOT", key]).ok()? {
            Resp::Int(slot) => u32::try_from(slot).ok()?,
            _ => return None,
        };
        slots(port)
            .ok()?
            .into_iter()
            .find(|r| (r.start..=r.end).contains(&slot))
    }

    /// Kills the node on `port` (SIGKILL) and waits for the process; a no-op for a port
    /// not in the cluster or already killed.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            if let Some(mut child) = self.nodes[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts the node on `port` again (killed first if running), in its directory, so that
    /// it rejoins with its `nodes.conf` (a master that was replaced comes back as a replica
    /// of its successor). Returns once it answers PING; [`RedisCluster::wait_ready`] tells
    /// when the cluster is whole again.
    pub fn restart(&mut self, port: u16) -> io::Result<()> {
        let i = self.index(port).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cluster node on port {port}"),
            )
        })?;
        self.kill(port);
        self.spawn(i)
    }

    /// Waits (at most `timeout`, polling) until every live node reports `cluster_state:ok`
    /// and `CLUSTER SLOTS` covers every slot with a master that is running and is not
    /// `killed_port`; whether that happened in time.
    pub fn wait_failover(&self, killed_port: u16, timeout: Duration) -> bool {
        poll(timeout, || {
            let live = self.live_ports();
            !live.is_empty()
                && live.iter().all(|&port| {
                    state_ok(port)
                        && slots(port).is_ok_and(|view| {
                            covers_all(&view)
                                && view
                                    .iter()
                                    .all(|r| r.master != killed_port && self.is_running(r.master))
                        })
                })
        })
    }

    /// Waits (at most `timeout`, polling) until the cluster is whole: all six nodes running,
    /// each reporting `cluster_state:ok` and the same `CLUSTER SLOTS`, which covers all
    /// slots in ranges of 3 masters with exactly one replica each, and every replica's
    /// `INFO replication` saying `master_link_status:up`; whether that happened in time.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        poll(timeout, || self.is_ready())
    }

    fn is_ready(&self) -> bool {
        if self.nodes.iter().any(|n| n.child.is_none()) {
            return false;
        }
        let mut first: Option<Vec<SlotRange>> = None;
        for node in &self.nodes {
            if !state_ok(node.port) {
                return false;
            }
            let Ok(view) = slots(node.port) else {
                return false;
            };
            match &first {
                None => first = Some(view),
                Some(seen) if *seen == view => {}
                Some(_) => return false,
            }
        }
        let Some(view) = first else {
            return false;
        };
        let mut masters: Vec<u16> = view.iter().map(|r| r.master).collect();
        masters.sort_unstable();
        masters.dedup();
        covers_all(&view)
            && masters.len() == MASTERS
            && view.iter().all(|r| r.replicas.len() == 1)
            && view
                .iter()
                .flat_map(|r| r.replicas.iter())
                .all(|&replica| link_up(replica))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The slot map of the first live node that answers.
    fn view(&self) -> Vec<SlotRange> {
        self.live_ports()
            .into_iter()
            .find_map(|port| slots(port).ok())
            .unwrap_or_default()
    }

    /// Every live node's slot map (for error messages).
    fn views(&self) -> Vec<(u16, io::Result<Vec<SlotRange>>)> {
        self.live_ports()
            .into_iter()
            .map(|port| (port, slots(port)))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
fn poll(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the ranges, sorted, cover slots 0 to 16,383 without a gap or overlap.
fn covers_all(view: &[SlotRange]) -> bool {
    let mut next = 0;
    for range in view {
        if range.start != next || range.end < range.start {
            return false;
        }
        next = range.end + 1;
    }
    next == SLOTS
}

fn state_ok(port: u16) -> bool {
    matches!(command(port, &["CLUSTER", "INFO"]), Ok(Resp::Bulk(Some(text)))
        if String::from_utf8_lossy(&text).lines().any(|l| l.trim() == "cluster_state:ok"))
}

fn link_up(port: u16) -> bool {
    matches!(command(port, &["INFO", "replication"]), Ok(Resp::Bulk(Some(text)))
        if String::from_utf8_lossy(&text).lines().any(|l| l.trim() == "master_link_status:up"))
}

/// `CLUSTER SLOTS` of the node on `port`, sorted by first slot.
fn slots(port: u16) -> io::Result<Vec<SlotRange>> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("CLUSTER SLOTS: {what}"));
    let Resp::Array(Some(ranges)) = command(port, &["CLUSTER", "SLOTS"])? else {
        return Err(bad("not an array"));
    };
    let mut view = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Resp::Array(Some(fields)) = range else {
            return Err(bad("a range is not an array"));
        };
        let number = |r: &Resp| match r {
            Resp::Int(n) => u32::try_from(*n).ok(),
            _ => None,
        };
        let node_port = |r: &Resp| match r {
            Resp::Array(Some(node)) => node.get(1).and_then(|p| match p {
                Resp::Int(p) => u16::try_from(*p).ok(),
                _ => None,
            }),
            _ => None,
        };
        let (Some(start), Some(end)) = (
            fields.first().and_then(number),
            fields.get(1).and_then(number),
        ) else {
            return Err(bad("a range without bounds"));
        };
        let nodes: Option<Vec<u16>> = fields[2..].iter().map(node_port).collect();
        let nodes = nodes.ok_or_else(|| bad("a node without a port"))?;
        let Some((&master, replicas)) = nodes.split_first() else {
            return Err(bad("a range without a master"));
        };
        let mut replicas = replicas.to_vec();
        replicas.sort_unstable();
        view.push(SlotRange {
            start,
            end,
            master,
            replicas,
        });
    }
    view.sort();
    Ok(view)
}

/// A RESP2 reply.
#[derive(Debug)]
enum Resp {
    /// A simple string (its text is not needed).
    Simple,
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Sends one command over a fresh connection and reads its reply; a Redis error reply is
/// an `Err`.
fn command(port: u16, args: &[&str]) -> io::Result<Resp> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    match read_reply(&mut BufReader::new(stream))? {
        Resp::Error(e) => Err(io::Error::other(format!("redis {args:?}: {e}"))),
        reply => Ok(reply),
    }
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| bad(format!("not a number: {s:?}")))
    };
    Ok(match kind {
        "+" => Resp::Simple,
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(int(rest)?),
        "$" => match usize::try_from(int(rest)?) {
            Err(_) => Resp::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len);
                Resp::Bulk(Some(data))
            }
        },
        "*" => match usize::try_from(int(rest)?) {
            Err(_) => Resp::Array(None),
            Ok(len) => Resp::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<io::Result<_>>()?,
            )),
        },
        _ => return Err(bad(format!("not a RESP reply: {line:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_cluster_starts_fails_over_and_takes_a_restarted_node_back() {
        assert!(
            RedisCluster::available(),
            "redis-server or redis-cli is not on PATH: install Debian's redis-server"
        );
        let started = Instant::now();
        let mut cluster = RedisCluster::start().expect("start a Redis Cluster");
        let ready_in = started.elapsed();
        assert_eq!(cluster.urls().len(), 6);
        assert_eq!(cluster.masters().len(), 3, "{:?}", cluster.views());
        assert_eq!(cluster.replicas().len(), 3, "{:?}", cluster.views());
        let mut everyone: Vec<u16> = cluster.masters();
        everyone.extend(cluster.replicas());
        everyone.sort_unstable();
        let mut ports = cluster.ports();
        ports.sort_unstable();
        assert_eq!(everyone, ports, "every node is a master or a replica");
        let mut seeds = cluster.seed_urls();
        seeds.sort();
        let mut masters: Vec<String> = cluster.masters().into_iter().map(url).collect();
        masters.sort();
        assert_eq!(seeds, masters);

        let master = cluster
            .master_of("crosswire")
            .expect("a master for the key");
        let replica = cluster
            .replica_of("crosswire")
            .expect("a replica for the key");
        assert_ne!(master, replica);
        cluster.kill(master);
        assert!(!cluster.is_running(master));
        let killed = Instant::now();
        assert!(
            cluster.wait_failover(master, Duration::from_secs(20)),
            "no failover within 20 s: {:?}",
            cluster.views()
        );
        let failover_in = killed.elapsed();
        assert_eq!(
            cluster.master_of("crosswire"),
            Some(replica),
            "the replica of the killed master was promoted"
        );
        assert_eq!(cluster.masters().len(), 3);

        cluster.restart(master).expect("restart the killed master");
        assert!(cluster.is_running(master));
        assert!(
            cluster.wait_ready(Duration::from_secs(30)),
            "the restarted node did not rejoin within 30 s: {:?}",
            cluster.views()
        );
        assert_eq!(cluster.replica_of("crosswire"), Some(master));
        eprintln!("redis cluster ready in {ready_in:?}, failover in {failover_in:?}");

        let root = cluster.root.clone();
        drop(cluster);
        assert!(ping(master).is_err() && ping(replica).is_err());
        assert!(!root.exists(), "the directories are removed on drop");
    }
}

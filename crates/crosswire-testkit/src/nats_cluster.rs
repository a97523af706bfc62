//! A NATS cluster of three `nats-server` processes on loopback, joined by routes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, nats_greets, spawn_until_ready, NatsServer};

/// Servers of the cluster.
const SERVERS: usize = 3;
/// How long [`NatsCluster::start`] and [`NatsCluster::restart`] wait for the routes.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(15);
/// Read timeout of one request to a monitoring endpoint.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// A NATS cluster of three `nats-server` processes on free loopback ports, killed on drop.
///
/// Each server has a client port, a cluster (route) port and a monitoring port (`-m`);
/// each is given the other two's route URLs (`--routes`) and the same `--cluster_name`, so
/// every server has a route to each other. Clients connected to one learn the others' client
/// URLs from its `INFO` (`connect_urls`). Servers are named by their index, 0 to 2.
///
/// ```no_run
/// use crosswire_testkit::NatsCluster;
///
/// let mut cluster = NatsCluster::start().expect("cluster");
/// let first = cluster.url(0);
/// cluster.kill(0);
/// cluster.restart(0).expect("back, routes up");
/// # let _ = first;
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Whether `nats-server` is installed (see [`NatsServer::available`]). Tests that need it
    /// fail (with a message) when not.
    pub fn available() -> bool {
        NatsServer::available()
    }

    /// Starts the three servers and waits (at most 10 s each) until each greets clients,
    /// then (at most 15 s) until every server has a route to both others
    /// ([`NatsCluster::wait_routes`]).
    pub fn start() -> io::Result<Self> {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 * SERVERS {
            let port = free_port()?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut cluster = Self {
            servers: ports
                .chunks(3)
                .map(|p| Member {
                    port: p[0],
                    cluster_port: p[1],
                    monitor_port: p[2],
                    child: None,
                })
                .collect(),
        };
        for i in 0..SERVERS {
            cluster.spawn(i)?;
        }
        cluster.routes_up()?;
        Ok(cluster)
    }

    fn routes_up(&self) -> io::Result<()> {
        if self.wait_routes(ROUTES_TIMEOUT) {
            return Ok(());
        }
        let routes: Vec<io::Result<usize>> = (0..SERVERS).map(|i| self.num_routes(i)).collect();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("NATS routes not all up within {ROUTES_TIMEOUT:?}: {routes:?}"),
        ))
    }

    fn spawn(&mut self, i: usize) -> io::Result<()> {
        let me = &self.servers[i];
        let port = me.port;
        let args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            me.monitor_port.to_string(),
            "--cluster_name".into(),
            "crosswire-test".into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", me.cluster_port),
            "--routes".into(),
            self.servers
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, other)| format!("nats://127.0.0.1:{}", other.cluster_port))
                .collect::<Vec<_>>()
                .join(","),
        ];
        let command = || {
            let mut c = Command::new(NatsServer::binary());
            c.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
            c
        };
        let child = spawn_until_ready(
            command,
            || nats_greets(port),
            "a NATS cluster server did not greet within 10 s",
        )?;
        self.servers[i].child = Some(child);
        Ok(())
    }

    /// The client URLs `nats://127.0.0.1:<port>` of the three servers, by index.
    pub fn urls(&self) -> Vec<String> {
        (0..SERVERS).map(|i| self.url(i)).collect()
    }

    /// The client URL of server `i` (panics unless `i < 3`).
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// Whether server `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.servers.get(i).is_some_and(|s| s.child.is_some())
    }

    /// Kills server `i` (SIGKILL) and waits for the process; a no-op if it is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers.get_mut(i).and_then(|s| s.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on the same ports (killed first if running) and waits until
    /// it greets clients and the cluster's routes are all up again (at most 10 s and 15 s).
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        if i >= SERVERS {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no NATS server {i}"),
            ));
        }
        self.kill(i);
        self.spawn(i)?;
        self.routes_up()
    }

    /// Routes server `i` has now (`num_routes` of its `/routez`).
    pub fn num_routes(&self, i: usize) -> io::Result<usize> {
        let routez = self.monitor(i, "/routez")?;
        routez["num_routes"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "routez: no num_routes"))
    }

    /// The names of the clients connected to server `i` now (`name` of each of its `/connz`
    /// connections; an unnamed client is `""`), e.g. to check which server a client that
    /// set a name is on.
    pub fn client_names(&self, i: usize) -> io::Result<Vec<String>> {
        let connz = self.monitor(i, "/connz")?;
        Ok(connz["connections"]
            .as_array()
            .map(|connections| {
                connections
                    .iter()
                    .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The index of the running server that client `name` is connected to now, if any.
    pub fn server_of(&self, name: &str) -> Option<usize> {
        (0..SERVERS).find(|&i| {
            self.is_running(i)
                && self
                    .client_names(i)
                    .is_ok_and(|names| names.iter().any(|n| n == name))
        })
    }

    /// Waits (at most `timeout`, polling) until every running server has a route to each
    /// other running server, and only those; whether that happened in time.
    pub fn wait_routes(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..SERVERS).filter(|&i| self.is_running(i)).collect();
            let meshed = running
                .iter()
                .all(|&i| self.num_routes(i).is_ok_and(|n| n + 1 == running.len()));
            if meshed {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET <path>` on server `i`'s monitoring port, as JSON.
    fn monitor(&self, i: usize, path: &str) -> io::Result<Value> {
        let server = self.servers.get(i).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no NATS server {i}"))
        })?;
        let mut stream = TcpStream::connect(("127.0.0.1", server.monitor_port))?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP head"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(io::Error::other(format!(
                "GET {path}: {}",
                head.lines().next().unwrap_or_default()
            )));
        }
        serde_json::from_str(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..SERVERS {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_cluster_meshes_and_a_restarted_server_rejoins() {
        assert!(
            NatsCluster::available(),
            "nats-server is not installed (scripts/test.sh installs Debian's nats-server)"
        );
        let started = Instant::now();
        let mut cluster = NatsCluster::start().expect("start a NATS cluster");
        let ready_in = started.elapsed();
        assert_eq!(cluster.urls().len(), 3);
        let ports: Vec<u16> = cluster.servers.iter().map(|s| s.port).collect();
        for (i, &port) in ports.iter().enumerate() {
            assert!(cluster.is_running(i));
            assert!(nats_greets(port), "server {i} greets clients");
            assert_eq!(cluster.num_routes(i).expect("routez"), 2, "server {i}");
            // No named client yet (the readiness probes connect without a name).
            let names = cluster.client_names(i).expect("connz");
            assert!(names.iter().all(String::is_empty), "{names:?}");
            assert_eq!(cluster.url(i), format!("nats://127.0.0.1:{port}"));
        }

        // A client's name shows on the server it is connected to.
        let mut client = TcpStream::connect(("127.0.0.1", ports[1])).expect("connect");
        client
            .write_all(b"CONNECT {\"name\":\"probe\",\"verbose\":false}\r\nPING\r\n")
            .expect("CONNECT");
        assert!(
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                cluster.server_of("probe") == Some(1)
            }),
            "the probe client shows on server 1"
        );
        drop(client);

        cluster.kill(0);
        assert!(!cluster.is_running(0));
        assert!(!nats_greets(ports[0]));
        assert!(
            cluster.wait_routes(Duration::from_secs(10)),
            "the two others keep only their route to each other"
        );
        assert_eq!(cluster.num_routes(1).expect("routez"), 1);
        let killed = Instant::now();
        cluster.restart(0).expect("restart server 0");
        let rejoined_in = killed.elapsed();
        for i in 0..SERVERS {
            assert_eq!(cluster.num_routes(i).expect("routez"), 2, "server {i}");
        }
        eprintln!("nats cluster meshed in {ready_in:?}, rejoined in {rejoined_in:?}");
        drop(cluster);
        assert!(ports.iter().all(|&p| !nats_greets(p)), "all die on drop");
    }
}

//! Behind a reverse proxy: a real `nginx` (Debian's binary, its own process on a free port,
//! configured as docs/DEPLOYMENT.md describes) in front of two real `crosswire serve` nodes
//! that share one real `redis-server`.
//!
//! - nginx balances WebSocket upgrades round-robin over the two nodes: consecutive clients
//!   land on different nodes (each asks its node with the relay's `whoami`), and they reach
//!   each other across nodes with a room message and a `to` message;
//! - each socket knows the client's address through the trusted proxy: crosswire's rule
//!   (`crates/crosswire/src/handshake.rs`, `client_ip`) takes the rightmost address of
//!   `X-Forwarded-For` that is not a trusted proxy, so a header the client sent itself is
//!   believed only when the client's own address is trusted, and a `Forwarded` header the
//!   client sent is removed by nginx before it can win over `X-Forwarded-For`;
//! - a node started without `--trusted-proxy` reports the proxy's own address.
//!
//! The clients connect from `127.0.0.2` (or `127.0.0.1`): Linux routes all of `127.0.0.0/8`
//! to the loopback device, so the test can be a client whose address is not the proxy's.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{redis, require_nginx, sync_room, Raw, Relay};
use serde_json::{json, Value};

/// The proxy (and the test's "local" client).
const PROXY: &str = "127.0.0.1";
/// A client whose address is not a trusted proxy.
const CLIENT: &str = "127.0.0.2";
/// What a client claims about itself in its own `X-Forwarded-For` header.
const SPOOFED_XFF: &str = "203.0.113.7";
/// What a client claims about itself in its own `Forwarded` header.
const SPOOFED_FORWARDED: &str = "for=198.51.100.1";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A running `nginx` in the foreground with everything (configuration, pid file, logs,
/// temporary files) in its own temporary directory, so it runs as any user; killed and its
/// directory removed on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

static NGINX_DIRS: AtomicU64 = AtomicU64::new(0);

/// The server-level proxy settings of docs/DEPLOYMENT.md.
const PROXY_SETTINGS: &str = r#"
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Forwarded "";
        proxy_read_timeout 120s;
        proxy_send_timeout 120s;
        proxy_buffering off;
"#;

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1, balancing round-robin over `servers`, and
    /// waits until it accepts connections.
    fn start(servers: &[SocketAddr]) -> Nginx {
        let bin = require_nginx();
        let dir = std::env::temp_dir().join(format!(
            "crosswire-nginx-{}-{}",
            std::process::id(),
            NGINX_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The port is free a moment before nginx binds it; another process may take it in
        // between, and then nginx exits at once: try again with another one.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = crosswire_testkit::free_port().unwrap();
            let config = dir.join("nginx.conf");
            std::fs::write(&config, nginx_config(&dir, port, servers)).unwrap();
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            let lines = Arc::new(Mutex::new(Vec::new()));
            let reader = {
                let stderr = child.stderr.take().unwrap();
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        lines.lock().unwrap().push(line);
                    }
                })
            };
            let addr = SocketAddr::new(ip(PROXY), port);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    // The pipe is closed: the reader ends once it has every line.
                    let _ = reader.join();
                    failures.push(format!(
                        "nginx on port {port} exited with {status}:\n{}",
                        lines.lock().unwrap().join("\n")
                    ));
                    break;
                }
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Nginx {
                        child,
                        addr,
                        dir,
                        lines,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nginx did not accept connections on {addr} within 10 s:\n{}",
                        lines.lock().unwrap().join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("nginx did not start:\n{}", failures.join("\n---\n"));
    }

    /// `ws://<nginx>/?id=<id>`.
    fn url(&self, id: &str) -> String {
        format!("ws://{}/?id={id}", self.addr)
    }

    /// What nginx logged (its error log goes to stderr).
    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration: foreground, one process, nothing outside `dir`; every request goes
/// round-robin to `servers`.
fn nginx_config(dir: &Path, port: u16, servers: &[SocketAddr]) -> String {
    let dir = dir.display();
    let servers: String = servers
        .iter()
        .map(|server| format!("        server {server};\n"))
        .collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 256;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream crosswire {{
{servers}    }}

    server {{
        listen {PROXY}:{port};
{PROXY_SETTINGS}
        location / {{
            proxy_pass http://crosswire;
        }}
    }}
}}
"#
    )
}

/// Asks the relay `whoami`; checks the bound id and returns (node, addr).
async fn whoami(client: &mut Raw) -> (String, Value) {
    let answer = client.request("whoami", json!(null)).await;
    assert_eq!(
        answer["id"],
        json!(client.id),
        "{}: whoami {answer}",
        client.id
    );
    let node = answer["node"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: whoami without a node: {answer}", client.id))
        .to_string();
    (node, answer["addr"].clone())
}

/// A client of the test: its id, the address it connects from, the headers it sends
/// itself, and the address its node must report.
type Case = (&'static str, &'static str, Headers, &'static str);
type Headers = &'static [(&'static str, &'static str)];

const OK: fn() -> Value = || json!({"ok": true});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_nginx_reach_each_other_across_nodes_and_keep_their_address() {
    require_nginx();
    let redis = redis();
    let urls = [redis.url()];
    let trusted = ["--trusted-proxy", PROXY];
    let p1 = Relay::node("p1", &urls, &trusted).await;
    let p2 = Relay::node("p2", &urls, &trusted).await;
    for n in [&p1, &p2] {
        n.wait_cluster(&["p1", "p2"], 1).await;
    }
    let nginx = Nginx::start(&[p1.addr, p2.addr]);

    // Four clients through nginx, each with what it sends and what its node must believe
    // about its address (the rightmost X-Forwarded-For hop that is not 127.0.0.1):
    let cases: [Case; 4] = [
        // nginx appends the peer: "203.0.113.7, 127.0.0.2" → the peer nginx saw.
        ("alice", CLIENT, &[("X-Forwarded-For", SPOOFED_XFF)], CLIENT),
        // nginx removes the client's Forwarded (it would win over X-Forwarded-For) and
        // sends "127.0.0.2".
        ("bob", CLIENT, &[("Forwarded", SPOOFED_FORWARDED)], CLIENT),
        // "203.0.113.7, 127.0.0.1": the client is itself at a trusted address, so the hop it
        // reported is believed — the header is used, not the proxy's peer address.
        (
            "carol",
            PROXY,
            &[("X-Forwarded-For", SPOOFED_XFF)],
            SPOOFED_XFF,
        ),
        // "127.0.0.1": every hop trusted → the leftmost, the client's own address.
        ("dave", PROXY, &[], PROXY),
    ];
    let mut clients = Vec::new();
    let mut nodes = Vec::new();
    for (id, from, headers, want) in cases {
        let mut client = Raw::connect_from(&nginx.url(id), id, ip(from), headers).await;
        let (node, addr) = whoami(&mut client).await;
        eprintln!("{id} from {from} with {headers:?}: node {node}, addr {addr}");
        assert_eq!(
            addr,
            json!(want),
            "{id} from {from} with {headers:?} (node {node}); nginx log:\n{}",
            nginx.log()
        );
        clients.push(client);
        nodes.push(node);
    }
    // Round-robin: consecutive connections alternate between the two nodes.
    for pair in nodes.windows(2) {
        assert_ne!(pair[0], pair[1], "not round-robin: {nodes:?}");
    }
    let mut sorted = nodes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["p1", "p1", "p2", "p2"], "{nodes:?}");
    // And each node counts the two sockets it serves (nginx holds one upstream connection
    // per client).
    for n in [&p1, &p2] {
        let (status, body) = n.healthz().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["connections"], json!(2), "{body}");
    }

    // alice and bob are on different nodes: a room message and a `to` message cross.
    let [alice, bob, carol, dave] = &mut clients[..] else {
        unreachable!()
    };
    assert_eq!(alice.request("join", json!({"room": "lobby"})).await, OK());
    assert_eq!(bob.request("join", json!({"room": "lobby"})).await, OK());
    sync_room(carol, "lobby", &mut [&mut *alice, &mut *bob]).await;
    let data = json!({"text": "hello lobby", "from": "alice"});
    assert_eq!(
        alice
            .request("room", json!({"room": "lobby", "data": data}))
            .await,
        OK()
    );
    alice.expect_msg(&data).await;
    bob.expect_msg(&data).await;
    let data = json!({"text": "hello alice", "from": "bob"});
    assert_eq!(
        bob.request("to", json!({"id": "alice", "data": data}))
            .await,
        OK()
    );
    alice.expect_msg(&data).await;
    alice.expect_nothing_more(bob).await;
    bob.expect_nothing_more(alice).await;
    dave.expect_nothing_more(bob).await;
    carol.expect_nothing_more(alice).await;

    // Around the proxy, straight to a node, a client cannot claim an address: its peer
    // (127.0.0.2) is not trusted, so its headers are ignored.
    let mut eve = Raw::connect_from(
        &p1.url("id=eve"),
        "eve",
        ip(CLIENT),
        &[
            ("X-Forwarded-For", SPOOFED_XFF),
            ("Forwarded", SPOOFED_FORWARDED),
        ],
    )
    .await;
    assert_eq!(whoami(&mut eve).await, ("p1".to_string(), json!(CLIENT)));

    // Health checks through the proxy are balanced the same way.
    let mut healthz_nodes = Vec::new();
    for _ in 0..2 {
        let (status, body) = crosswire_testkit::http_get(nginx.addr, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("GET /healthz through nginx: {e}"));
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["nodes"], json!(["p1", "p2"]), "{body}");
        healthz_nodes.push(body["node"].as_str().unwrap().to_string());
    }
    healthz_nodes.sort_unstable();
    assert_eq!(healthz_nodes, ["p1", "p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_trusted_proxy_sees_the_proxy_address() {
    require_nginx();
    let redis = redis();
    let urls = [redis.url()];
    let plain = Relay::node("u1", &urls, &[]).await;
    plain.wait_cluster(&["u1"], 1).await;
    let nginx = Nginx::start(&[plain.addr]);

    // Through nginx: whatever the client is and sends, the peer is nginx at 127.0.0.1.
    for (id, from, headers) in [
        ("frank", CLIENT, &[("X-Forwarded-For", SPOOFED_XFF)][..]),
        ("grace", CLIENT, &[][..]),
        ("heidi", PROXY, &[("X-Forwarded-For", SPOOFED_XFF)][..]),
    ] {
        let mut client = Raw::connect_from(&nginx.url(id), id, ip(from), headers).await;
        let (node, addr) = whoami(&mut client).await;
        assert_eq!(node, "u1");
        assert_eq!(
            addr,
            json!(PROXY),
            "{id} from {from} with {headers:?}; nginx log:\n{}",
            nginx.log()
        );
    }
    // Directly, the same node sees the client itself.
    let mut ivan = Raw::connect_from(&plain.url("id=ivan"), "ivan", ip(CLIENT), &[]).await;
    assert_eq!(whoami(&mut ivan).await, ("u1".to_string(), json!(CLIENT)));
}

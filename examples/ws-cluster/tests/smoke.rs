//! Runs the WebSocket cluster example for real: a `redis-server` on a free port, three
//! `wsserver` nodes on free ports, the 50 `clients` spread over them and the `boss` on the
//! second node, and checks that each of its four commands reaches exactly the clients it
//! names, wherever they are connected.

#[path = "../../support/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::time::Duration;

use crosswire_testkit::RedisServer;
use process::Proc;

const NODES: [&str; 3] = ["serverA", "serverB", "serverC"];

/// The ids of the clients named in `lines` (`[Client <id>,port:<port>] …`).
fn client_ids<'a>(lines: impl IntoIterator<Item = &'a String>) -> BTreeSet<u32> {
    lines
        .into_iter()
        .map(|line| {
            let rest = &line[line.find("[Client ").expect("a client line") + 8..];
            rest[..rest.find(',').expect("id")]
                .parse()
                .expect("numeric id")
        })
        .collect()
}

/// The clients whose `lines` show the `say` event of `action`.
fn said(lines: &[String], action: &str) -> BTreeSet<u32> {
    let action = format!(r#""action":"{action}""#);
    client_ids(
        lines
            .iter()
            .filter(|l| l.contains("Received say event") && l.contains(&action)),
    )
}

#[test]
fn boss_commands_reach_clients_on_every_node() {
    let redis = RedisServer::start().expect("redis-server must be installed to run this test");
    let url = redis.url();
    let nodes: Vec<Proc> = NODES
        .iter()
        .map(|name| {
            Proc::spawn(
                name,
                env!("CARGO_BIN_EXE_wsserver"),
                &["--name", name, "--port", "0", "--redis", &url],
            )
        })
        .collect();
    let ports: Vec<String> = nodes
        .iter()
        .map(|node| node.listening_addr().port().to_string())
        .collect();
    for (node, name) in nodes.iter().zip(NODES) {
        for other in NODES.iter().filter(|n| **n != name) {
            node.wait_line(&["node joined", &format!("node={other}")]);
        }
    }

    let mut args = vec!["--clients", "50", "--join", "10"];
    for port in &ports {
        args.extend(["--port", port]);
    }
    let clients = Proc::spawn("clients", env!("CARGO_BIN_EXE_clients"), &args);
    clients.wait_lines(50, &["Connect success"]);
    let joined = clients.wait_lines(
        10,
        &[
            "Received joinRoom callback response",
            "Successfully joined the roomId:",
        ],
    );
    let in_room_1000 = client_ids(joined.iter().filter(|l| l.contains("roomId:1000\"")));

    // On serverB: clients 3, 10, 13, 25 and 37 are all on the other two nodes.
    let mut boss = Proc::spawn(
        "boss",
        env!("CARGO_BIN_EXE_boss"),
        &["--port", &ports[1], "--step-ms", "500"],
    );
    boss.wait_success();
    boss.wait_line(&["Connect success"]);
    boss.wait_line(&["Received say event", r#""action":"broadcast""#]);
    for action in ["broadcast", "toPlayer", "toPlayers", "toRoom"] {
        let sent = format!("Message sent successfully [action:{action}] ");
        boss.wait_line(&["Received callback response", &sent]);
    }

    // Every command reached exactly its clients.
    let everyone: BTreeSet<u32> = (1..=50).collect();
    let expected = [
        ("broadcast", everyone),
        ("toPlayer", BTreeSet::from([13])),
        ("toPlayers", BTreeSet::from([3, 10, 25, 37])),
        ("toRoom", in_room_1000),
    ];
    for (action, ids) in &expected {
        clients.wait_for(&format!("{action} to reach {ids:?}"), |lines| {
            (said(lines, action) == *ids).then_some(())
        });
    }
    // Nothing more arrives late.
    std::thread::sleep(Duration::from_millis(300));
    for (action, ids) in &expected {
        assert_eq!(said(&clients.lines(&[]), action), *ids, "{action}");
    }
}

//! The flush helper threads can be turned off for the whole process
//! ([`crosswire::set_flush_threads`]): a broadcast large enough to be split between threads is
//! then written entirely by the thread that produced it, and still reaches every socket.
//! (Its own test binary: the setting is process-wide and read once.)

use std::time::Duration;

use crosswire::ServerConfig;
use crosswire_testkit::{spawn_server, RawClient};

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_everyone_with_the_flush_helpers_off() {
    assert!(crosswire::set_flush_threads(0), "set before any broadcast");
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    // Well above the batch size that is split between threads (128 sockets).
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(RawClient::connect(addr, "/").await.expect("connect"));
    }
    assert!(
        crosswire_testkit::wait_until(Duration::from_secs(10), || server.connection_count() == 300)
            .await
    );
    for round in 0..3 {
        assert_eq!(server.to_all().emit("tick", &round).expect("emit"), 300);
        for c in &mut clients {
            let got = c
                .recv_json(Duration::from_secs(10))
                .await
                .expect("delivered");
            assert_eq!(got["event"], "tick");
            assert_eq!(got["payload"], round);
        }
    }
    let names = thread_names();
    assert!(!names.is_empty(), "threads readable from /proc");
    assert!(
        !names.iter().any(|n| n.starts_with("crosswire-flush")),
        "{names:?}"
    );
    assert!(
        !crosswire::set_flush_threads(2),
        "the setting is fixed once the first large batch was written"
    );
}

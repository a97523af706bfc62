//! The receiver's bookkeeping against a scripted server that pushes stamped frames
//! (duplicates, reordering, noise) — no relay involved.

use crosswire_bench::common::{self, Shared};
use crosswire_bench::stamp::{now_us, stamped_data};
use crosswire_bench::stats::ShardedHistogram;
use crosswire_bench::ws;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn receiver_counts_unique_duplicate_and_out_of_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for seq in [0u64, 1, 1, 3, 2, 4] {
            let data = stamped_data(seq, now_us(), 64);
            let frame = format!(r#"{{"event":"msg","payload":"{data}"}}"#);
            conn.send(Message::text(frame)).await.unwrap();
        }
        // Noise that must be ignored.
        conn.send(Message::text("not json")).await.unwrap();
        conn.send(Message::text(r#"{"event":"msg","payload":"cwb1:x"}"#))
            .await
            .unwrap();
        conn.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        // Keep the connection open until the client closes it.
        while let Some(Ok(m)) = conn.next().await {
            if m.is_close() {
                break;
            }
        }
    });

    let conn = ws::connect(&format!("ws://{addr}"), "r0").await.unwrap();
    let shared = Arc::new(Shared::default());
    let hist = Arc::new(ShardedHistogram::new(2));
    let (stop, stop_rx) = watch::channel(false);
    let handle = tokio::spawn(common::receive(
        conn,
        0,
        100,
        hist.clone(),
        shared.clone(),
        stop_rx,
    ));
    let all =
        common::wait_deliveries(&shared, 5, Duration::from_secs(5), Duration::from_secs(5)).await;
    assert!(all);
    let totals = common::collect(&stop, vec![handle]).await;
    assert_eq!(totals.unique, 5);
    assert_eq!(totals.duplicates, 1);
    assert_eq!(totals.out_of_order, 1);
    assert!(totals.last_delivery_us > 0);
    assert_eq!(hist.merged().len(), 5);
    server.await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    // Bind then drop to get a port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let err = ws::connect(&format!("ws://127.0.0.1:{port}"), "x")
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");
}

#[tokio::test]
async fn wait_deliveries_gives_up_when_nothing_arrives() {
    let shared = Shared::default();
    let t = std::time::Instant::now();
    let all = common::wait_deliveries(
        &shared,
        1,
        Duration::from_secs(5),
        Duration::from_millis(50),
    )
    .await;
    assert!(!all);
    assert!(t.elapsed() < Duration::from_secs(2));
}

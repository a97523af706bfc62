//! Reconnect behaviour: schedule, recovery, repeat limit, reconnect by hand.

mod common;

use std::time::Duration;

use common::{config, dead_addr, next_event, next_open, ScriptServer, WAIT};
use crosswire_client::{
    reconnect_delay, Client, ClientEvent, ConnectionState, EventReceiver, ReconnectInfo,
};
use tokio::time::Instant;

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn next_reconnect(events: &mut EventReceiver) -> (ReconnectInfo, Instant) {
    next_event(events, "reconnect", |e| match e {
        ClientEvent::Reconnect(info) => Some((*info, Instant::now())),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn reconnects_on_schedule_while_the_server_is_down_then_recovers() {
    let mut server = ScriptServer::start().await;
    let addr = server.addr;
    // fast 50 ms for 2 attempts, then 100-150, 200-250, then capped at 300 ms.
    let client = Client::connect(config(&server.url()).with_fast_reconnect_threshold(2)).unwrap();
    let mut events = client.events();
    next_open(&mut events).await;
    server.expect_connected().await;

    server.stop();
    let error = next_event(&mut events, "error", |e| match e {
        ClientEvent::Error(message) => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(!error.is_empty());
    let close = next_event(&mut events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.code),
        _ => None,
    })
    .await;
    assert_eq!(close, 1006);

    let mut previous: Option<(ReconnectInfo, Instant)> = None;
    for repeat in 1..=5u32 {
        let (info, at) = next_reconnect(&mut events).await;
        assert_eq!(info.repeat, repeat);
        assert!(client.reconnecting());
        let timeout = MS(info.timeout);
        let lowest = reconnect_delay(repeat, 2, MS(50), MS(300), Duration::ZERO);
        let highest = reconnect_delay(repeat, 2, MS(50), MS(300), MS(49));
        assert!(
            (lowest..=highest).contains(&timeout),
            "attempt {repeat}: {timeout:?} not in {lowest:?}..={highest:?}"
        );
        if let Some((before, before_at)) = previous {
            // The attempt announced earlier really waited its delay.
            assert!(at - before_at >= MS(before.timeout));
        }
        previous = Some((info, at));
    }
    assert_eq!(previous.map(|p| p.0.timeout), Some(300));

    // The server comes back on the same port: the client opens again and the count restarts.
    let mut server = ScriptServer::start_at(addr).await;
    next_open(&mut events).await;
    server.expect_connected().await;
    assert!(!client.reconnecting());
    assert_eq!(client.state(), ConnectionState::Open);

    server.stop();
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(info.repeat, 1);
    assert_eq!(info.timeout, 50);
    client.manual_close();
}

#[tokio::test]
async fn repeat_limit_stops_the_attempts_until_reconnect_by_hand() {
    let addr = dead_addr().await;
    let client = Client::connect(
        config(&format!("ws://{addr}"))
            .with_fast_reconnect_interval(MS(20))
            .with_repeat_limit(Some(3)),
    )
    .unwrap();
    let mut events = client.events();
    let mut seen = Vec::new();
    let limit = next_event(&mut events, "repeat-limit", |e| {
        seen.push(e.name().to_string());
        match e {
            ClientEvent::RepeatLimit(limit) => Some(*limit),
            _ => None,
        }
    })
    .await;
    assert_eq!(limit, 3);
    assert_eq!(
        seen,
        [
            "error",
            "reconnect",
            "error",
            "reconnect",
            "error",
            "reconnect",
            "error",
            "repeat-limit"
        ]
    );
    assert!(!client.reconnecting());
    assert_eq!(client.state(), ConnectionState::Closed);

    // By hand, with the count reset: attempts start again from 1, and once the server is
    // there the client opens.
    let mut server = ScriptServer::start_at(addr).await;
    client.reconnect(true);
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(info.repeat, 1);
    next_open(&mut events).await;
    server.expect_connected().await;
    client.manual_close();
}

#[tokio::test]
async fn reconnect_by_hand_after_a_server_close() {
    let mut server = ScriptServer::start().await;
    let client = Client::connect(config(&server.url())).unwrap();
    let mut events = client.events();
    client.on(crosswire_client::names::CLOSE, {
        let client = client.clone();
        move |payload| {
            // The seed's pattern: the application decides from the code.
            if payload.value()["code"] == 4000 {
                client.reconnect(false);
            }
        }
    });
    next_open(&mut events).await;
    server.expect_connected().await;
    server.close_all(4000, "restart");
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(info.repeat, 1);
    next_open(&mut events).await;
    server.expect_connected().await;

    // Reconnecting an open connection closes it (1000) and opens a new one.
    client.reconnect(false);
    assert_eq!(server.expect_close().await.0, Some(1000));
    next_open(&mut events).await;
    server.expect_connected().await;
    client.manual_close();
    assert_eq!(server.expect_close().await.0, Some(4001));
}

#[tokio::test]
async fn manual_close_while_waiting_cancels_the_attempt() {
    let addr = dead_addr().await;
    let client = Client::connect(
        config(&format!("ws://{addr}")).with_fast_reconnect_interval(Duration::from_secs(30)),
    )
    .unwrap();
    let mut events = client.events();
    next_reconnect(&mut events).await;
    assert_eq!(client.state(), ConnectionState::Reconnecting);
    client.manual_close();
    // The stream ends when the task has ended, long before the 30 s delay.
    assert!(
        tokio::time::timeout(WAIT, async { while events.recv().await.is_some() {} })
            .await
            .is_ok()
    );
    assert!(!client.reconnecting());
    assert_eq!(client.state(), ConnectionState::ManuallyClosed);
}

#[tokio::test]
async fn wss_against_a_plain_server_is_an_error_not_a_panic() {
    // Without a TLS feature the connect fails at once; with one, the TLS handshake fails
    // against this plain server. Either way: `error`, then the repeat limit.
    let server = ScriptServer::start().await;
    let client =
        Client::connect(config(&format!("wss://{}", server.addr)).with_repeat_limit(Some(0)))
            .unwrap();
    let mut events = client.events();
    let error = next_event(&mut events, "error", |e| match e {
        ClientEvent::Error(message) => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(!error.is_empty());
    next_event(&mut events, "repeat-limit", |e| {
        matches!(e, ClientEvent::RepeatLimit(0)).then_some(())
    })
    .await;
    client.manual_close();
}

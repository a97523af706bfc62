//! Binary messages: handled as the seed does when the application has no `binary` handler
//! (UTF-8 like text, anything else dropped), delivered whole to `binary` handlers when it has
//! one; binary and raw text sent to one socket or to targets.

use crosswire::system::{Binary, RawMessage};
use crosswire::{Room, ServerConfig, Socket};
use crosswire_testkit::{install_relay, spawn_server, RawClient, RawEvent, TIMEOUT};

async fn next_data(client: &mut RawClient) -> RawEvent {
    loop {
        match client.recv_event(TIMEOUT).await {
            Some(RawEvent::Ping(_) | RawEvent::Pong(_)) => continue,
            Some(event) => return event,
            None => panic!("nothing received"),
        }
    }
}

#[tokio::test]
async fn without_a_binary_handler_utf8_binary_is_text_and_the_rest_is_dropped() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let mut client = RawClient::connect_bound(addr, "b").await.unwrap();
    client
        .send_binary(br#"{"event":"echo","payload":"as text","callbackId":"1"}"#)
        .await
        .unwrap();
    let reply = client
        .recv_json(TIMEOUT)
        .await
        .expect("reply to a binary event");
    assert_eq!(reply["callbackId"], "1");
    assert_eq!(reply["payload"], "as text");
    let before = server.stats().malformed_frames;
    client.send_binary(&[0xff, 0xfe, 0x00]).await.unwrap();
    client.sync("").await.unwrap();
    assert_eq!(server.stats().malformed_frames, before + 1);
}

#[tokio::test]
async fn a_binary_handler_gets_every_binary_message_and_answers_in_binary() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    server.on_system(|binary: Binary, socket: Socket| {
        let mut answer = binary.data.to_vec();
        answer.reverse();
        socket.send_binary(&answer).unwrap();
    });
    let mut client = RawClient::connect_bound(addr, "b").await.unwrap();
    // Not UTF-8, and UTF-8: both reach the handler untouched.
    client.send_binary(&[0, 159, 146, 150]).await.unwrap();
    assert_eq!(
        next_data(&mut client).await,
        RawEvent::Binary(vec![150, 146, 159, 0])
    );
    client.send_binary(b"{}").await.unwrap();
    assert_eq!(
        next_data(&mut client).await,
        RawEvent::Binary(b"}{".to_vec())
    );
    assert_eq!(server.stats().malformed_frames, 0);
}

#[tokio::test]
async fn binary_and_raw_text_reach_targets() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    // An echo of raw text messages (outside the event protocol).
    server.on_system(|message: RawMessage, socket: Socket| {
        if message.text.starts_with("raw:") {
            socket.send_text(&message.text).unwrap();
        }
    });
    let mut a = RawClient::connect_bound(addr, "a").await.unwrap();
    let mut b = RawClient::connect_bound(addr, "b").await.unwrap();
    let room = Room::new("r", "1");
    server.join(&room, "a");
    server.join(&room, "b");
    let sent = server.to_room(&room).send_binary([1u8, 2, 3]).unwrap();
    assert_eq!(sent, 2);
    for client in [&mut a, &mut b] {
        assert_eq!(next_data(client).await, RawEvent::Binary(vec![1, 2, 3]));
    }
    let sent = server.to("b").send_text("plain words").unwrap();
    assert_eq!(sent, 1);
    assert_eq!(
        next_data(&mut b).await,
        RawEvent::Text("plain words".into())
    );
    a.send_text("raw:hello").await.unwrap();
    let echoed = next_data(&mut a).await;
    assert_eq!(echoed, RawEvent::Text("raw:hello".into()));
}

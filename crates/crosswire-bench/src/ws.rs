//! WebSocket connection helpers for the relay contract (connect with `?id=`, join a room,
//! application heartbeat).

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connect (TCP + upgrade) or a single reply may take before it counts as failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Adds `id=<id>` to the query string of `base` (keeping any path and query it already has).
pub fn client_url(base: &str, id: &str) -> Result<String> {
    let mut url = url::Url::parse(base).with_context(|| format!("invalid server url {base:?}"))?;
    match url.scheme() {
        "ws" | "wss" => {}
        other => bail!("server url {base:?} must be ws:// or wss://, not {other}://"),
    }
    url.query_pairs_mut().append_pair("id", id);
    Ok(url.into())
}

/// Size of each connection's read buffer. tungstenite zero-fills the spare part of its read
/// buffer on every read, so the 128 KiB default costs far more CPU (and memory) than the small
/// frames of a benchmark are worth.
pub const READ_BUFFER_SIZE: usize = 4096;

/// Opens a connection to `base` bound to client id `id` (Nagle disabled, small read buffer).
pub async fn connect(base: &str, id: &str) -> Result<Ws> {
    let url = client_url(base, id)?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE);
    let fut = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(anyhow!("cannot connect to {url}: {e}")),
        Err(_) => Err(anyhow!("connecting to {url} timed out")),
    }
}

/// Waits for the next text frame for which `accept` returns true, skipping others
/// (pings are answered by the library while reading).
pub async fn wait_for_text(ws: &mut Ws, mut accept: impl FnMut(&str) -> bool) -> Result<()> {
    let fut = async {
        while let Some(msg) = ws.next().await {
            match msg.context("connection error while waiting for a reply")? {
                Message::Text(t) if accept(t.as_str()) => return Ok(()),
                Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
                _ => {}
            }
        }
        bail!("server closed the connection while a reply was awaited")
    };
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("no reply within {IO_TIMEOUT:?}"))?
}

/// Joins `room` and waits for the server's `{"ok":true}` reply.
pub async fn join(ws: &mut Ws, room: &str) -> Result<()> {
    ws.send(Message::text(crate::stamp::join_frame(room, "join")))
        .await
        .context("sending join")?;
    wait_for_text(ws, |t| t.contains(r#""callbackId":"join""#)).await?;
    Ok(())
}

/// Sends the default application heartbeat (an empty text frame) and waits for the echo.
pub async fn heartbeat(ws: &mut Ws) -> Result<()> {
    ws.send(Message::text(""))
        .await
        .context("sending heartbeat")?;
    wait_for_text(ws, str::is_empty).await
}

/// Closes `ws` politely, giving up after a short time.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_added_to_the_query() {
        assert_eq!(
            client_url("ws://127.0.0.1:9000", "a b").unwrap(),
            "ws://127.0.0.1:9000/?id=a+b"
        );
        assert_eq!(
            client_url("ws://h:1/app?token=t", "x").unwrap(),
            "ws://h:1/app?token=t&id=x"
        );
        assert!(client_url("http://h:1/", "x").is_err());
        assert!(client_url("not a url", "x").is_err());
    }
}

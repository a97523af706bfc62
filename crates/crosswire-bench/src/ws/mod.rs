//! WebSocket connection helpers for the relay contract (connect with `?id=`, join a room,
//! application heartbeat), over `ws://` or `wss://`, with or without permessage-deflate.
//!
//! A [`Ws`] is either a tokio-tungstenite connection (the default) or, with
//! [`ConnectOptions::deflate`], the bench's own client ([`own`]) on crosswire's codec, since
//! tungstenite has no permessage-deflate. Both run over a [`Transport`] that counts the
//! bytes crossing the socket. With [`ConnectOptions::protocol`] [`Protocol::SocketIo`] either
//! carries Socket.IO instead ([`socketio`]): the scenarios' frames are translated, so they run
//! unchanged against Socket.IO servers that define the relay's events.

pub mod own;
pub mod socketio;
pub mod transport;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use socketio::Protocol;
pub use transport::Transport;

/// How long a connect (TCP + TLS + upgrade) or a single reply may take before it counts as
/// failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Size of each connection's read buffer. tungstenite zero-fills the spare part of its read
/// buffer on every read, so the 128 KiB default costs far more CPU (and memory) than the small
/// frames of a benchmark are worth.
pub const READ_BUFFER_SIZE: usize = 4096;

/// Default of [`ConnectOptions::deflate_min_size`].
pub const DEFAULT_DEFLATE_MIN_SIZE: usize = 256;

/// How clients connect: the authorities trusted for `wss://`, and permessage-deflate.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Client TLS configuration for `wss://` URLs (see [`crate::tls::client_config`]);
    /// `ws://` URLs ignore it.
    pub tls: Option<Arc<ClientConfig>>,
    /// Offer permessage-deflate (and require the server to accept it); uses the own client.
    pub deflate: bool,
    /// With `deflate`: text messages of at least this many bytes are sent compressed.
    pub deflate_min_size: usize,
    /// The protocol spoken over the WebSocket: crosswire's, or Socket.IO ([`socketio`]).
    pub protocol: Protocol,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            tls: None,
            deflate: false,
            deflate_min_size: DEFAULT_DEFLATE_MIN_SIZE,
            protocol: Protocol::Crosswire,
        }
    }
}

/// A client WebSocket connection: tungstenite's, or the own client's for permessage-deflate.
#[derive(Debug)]
pub enum Ws {
    /// tokio-tungstenite (no permessage-deflate).
    Tungstenite(WebSocketStream<Transport>),
    /// The own client ([`own`]), with permessage-deflate.
    Own(own::OwnWs),
    /// Socket.IO over one of the above ([`socketio`]).
    SocketIo(Box<socketio::SocketIoWs>),
}

/// Adds `id=<id>` to the query string of `base` (keeping any path and query it already has).
pub fn client_url(base: &str, id: &str) -> Result<String> {
    Ok(client_url_parsed(base, id)?.into())
}

fn client_url_parsed(base: &str, id: &str) -> Result<url::Url> {
    let mut url = url::Url::parse(base).with_context(|| format!("invalid server url {base:?}"))?;
    match url.scheme() {
        "ws" | "wss" => {}
        other => bail!("server url {base:?} must be ws:// or wss://, not {other}://"),
    }
    url.query_pairs_mut().append_pair("id", id);
    Ok(url)
}

/// Opens a connection to `base` bound to client id `id` (Nagle disabled, small read buffer)
/// with the default options: `ws://` only, no permessage-deflate.
pub async fn connect(base: &str, id: &str) -> Result<Ws> {
    connect_with(base, id, &ConnectOptions::default()).await
}

/// Opens a connection to `base` bound to client id `id` as `options` say.
pub async fn connect_with(base: &str, id: &str, options: &ConnectOptions) -> Result<Ws> {
    let url = client_url_parsed(base, id)?;
    match tokio::time::timeout(IO_TIMEOUT, open(&url, options)).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(anyhow!("cannot connect to {url}: {e:#}")),
        Err(_) => Err(anyhow!("connecting to {url} timed out")),
    }
}

async fn open(url: &url::Url, options: &ConnectOptions) -> Result<Ws> {
    if options.protocol == Protocol::SocketIo {
        let ws = open_ws(&socketio::endpoint(url), options).await?;
        return Ok(Ws::SocketIo(Box::new(socketio::handshake(ws).await?)));
    }
    open_ws(url, options).await
}

async fn open_ws(url: &url::Url, options: &ConnectOptions) -> Result<Ws> {
    let transport = Transport::connect(url, options.tls.as_ref()).await?;
    if options.deflate {
        let ws = own::handshake(transport, url, options).await?;
        return Ok(Ws::Own(ws));
    }
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url.as_str(), transport, Some(config)).await?;
    Ok(Ws::Tungstenite(ws))
}

/// The error of a WebSocket-level operation on a Socket.IO connection's own variant (the
/// Socket.IO layer only ever sits on a plain WebSocket).
fn nested() -> anyhow::Error {
    anyhow!("a Socket.IO connection cannot carry another")
}

impl Ws {
    /// The next message (pings are answered while reading); `None` once the connection
    /// ended.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        match self {
            Self::SocketIo(ws) => ws.next().await,
            plain => plain.next_frame().await,
        }
    }

    /// Queues a text message without flushing.
    pub async fn feed_text(&mut self, text: String) -> Result<()> {
        match self {
            Self::SocketIo(ws) => ws.feed_text(text).await,
            plain => plain.feed_frame(text).await,
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Self::SocketIo(ws) => ws.flush().await,
            plain => plain.flush_frames().await,
        }
    }

    /// The next WebSocket message as it came (of a plain WebSocket).
    pub(crate) async fn next_frame(&mut self) -> Option<Result<Message>> {
        match self {
            Self::Tungstenite(ws) => StreamExt::next(ws).await.map(|r| r.map_err(Into::into)),
            Self::Own(ws) => ws.next().await,
            Self::SocketIo(_) => Some(Err(nested())),
        }
    }

    /// Queues a text frame as it is, without flushing (of a plain WebSocket).
    pub(crate) async fn feed_frame(&mut self, text: String) -> Result<()> {
        match self {
            Self::Tungstenite(ws) => Ok(ws.feed(Message::text(text)).await?),
            Self::Own(ws) => {
                ws.feed_text(&text);
                Ok(())
            }
            Self::SocketIo(_) => Err(nested()),
        }
    }

    /// Writes every queued frame (of a plain WebSocket).
    pub(crate) async fn flush_frames(&mut self) -> Result<()> {
        match self {
            Self::Tungstenite(ws) => Ok(SinkExt::flush(ws).await?),
            Self::Own(ws) => ws.flush().await,
            Self::SocketIo(_) => Err(nested()),
        }
    }

    /// Sends a text frame as it is and flushes (of a plain WebSocket).
    pub(crate) async fn send_frame(&mut self, text: String) -> Result<()> {
        self.feed_frame(text).await?;
        self.flush_frames().await
    }

    /// Sends a text message and flushes.
    pub async fn send_text(&mut self, text: String) -> Result<()> {
        self.feed_text(text).await?;
        self.flush().await
    }

    /// Whether this connection negotiated permessage-deflate.
    pub fn deflate(&self) -> bool {
        match self {
            Self::SocketIo(ws) => ws.inner.deflate(),
            plain => matches!(plain, Self::Own(ws) if ws.deflate()),
        }
    }

    /// The Socket.IO layer, when the connection speaks Socket.IO.
    pub fn socketio(&self) -> Option<&socketio::SocketIoWs> {
        match self {
            Self::SocketIo(ws) => Some(ws),
            _ => None,
        }
    }

    fn transport(&self) -> &Transport {
        match self {
            Self::Tungstenite(ws) => ws.get_ref(),
            Self::Own(ws) => ws.transport(),
            Self::SocketIo(ws) => ws.inner.transport(),
        }
    }

    /// Bytes read from the socket so far, upgrade response (and TLS) included.
    pub fn bytes_read(&self) -> u64 {
        self.transport().bytes_read()
    }

    /// Bytes written to the socket so far, upgrade request (and TLS) included.
    pub fn bytes_written(&self) -> u64 {
        self.transport().bytes_written()
    }

    /// Splits into a sending half and a receiving half.
    pub fn split(self) -> (WsSink, WsStream) {
        match self {
            Self::Tungstenite(ws) => {
                let (sink, stream) = StreamExt::split(ws);
                (WsSink::Tungstenite(sink), WsStream::Tungstenite(stream))
            }
            Self::Own(ws) => {
                let (sink, stream) = ws.split();
                (WsSink::Own(Box::new(sink)), WsStream::Own(Box::new(stream)))
            }
            Self::SocketIo(ws) => {
                let (sink, stream) = ws.split();
                (
                    WsSink::SocketIo(Box::new(sink)),
                    WsStream::SocketIo(Box::new(stream)),
                )
            }
        }
    }

    async fn close_now(&mut self) {
        match self {
            Self::SocketIo(ws) => ws.inner.close_frame().await,
            plain => plain.close_frame().await,
        }
    }

    /// Sends a close frame (of a plain WebSocket).
    async fn close_frame(&mut self) {
        match self {
            Self::Tungstenite(ws) => {
                let _ = ws.close(None).await;
            }
            Self::Own(ws) => ws.close().await,
            Self::SocketIo(_) => {}
        }
    }
}

/// The sending half of a [`Ws`].
#[derive(Debug)]
pub enum WsSink {
    /// tokio-tungstenite's.
    Tungstenite(SplitSink<WebSocketStream<Transport>, Message>),
    /// The own client's.
    Own(Box<own::OwnSink>),
    /// A Socket.IO connection's ([`socketio`]).
    SocketIo(Box<socketio::SocketIoSink>),
}

impl WsSink {
    /// Queues a text message without flushing.
    pub async fn feed_text(&mut self, text: String) -> Result<()> {
        match self {
            Self::SocketIo(s) => s.feed_text(text).await,
            plain => plain.feed_frame(text).await,
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Self::SocketIo(s) => s.flush().await,
            plain => plain.flush_frames().await,
        }
    }

    /// Sends a text message and flushes.
    pub async fn send_text(&mut self, text: String) -> Result<()> {
        match self {
            Self::Tungstenite(s) => Ok(s.send(Message::text(text)).await?),
            Self::Own(s) => {
                s.feed_text(&text);
                s.flush().await
            }
            Self::SocketIo(s) => {
                s.feed_text(text).await?;
                s.flush().await
            }
        }
    }

    /// Sends a close frame.
    pub async fn close(&mut self) {
        match self {
            Self::SocketIo(s) => s.close().await,
            plain => plain.close_frame().await,
        }
    }

    /// Queues a text frame as it is (of a plain WebSocket's half).
    pub(crate) async fn feed_frame(&mut self, text: String) -> Result<()> {
        match self {
            Self::Tungstenite(s) => Ok(s.feed(Message::text(text)).await?),
            Self::Own(s) => {
                s.feed_text(&text);
                Ok(())
            }
            Self::SocketIo(_) => Err(nested()),
        }
    }

    /// Writes every queued frame (of a plain WebSocket's half).
    pub(crate) async fn flush_frames(&mut self) -> Result<()> {
        match self {
            Self::Tungstenite(s) => Ok(SinkExt::flush(s).await?),
            Self::Own(s) => s.flush().await,
            Self::SocketIo(_) => Err(nested()),
        }
    }

    /// Sends a close frame (of a plain WebSocket's half).
    pub(crate) async fn close_frame(&mut self) {
        match self {
            Self::Tungstenite(s) => {
                let _ = SinkExt::close(s).await;
            }
            Self::Own(s) => s.close().await,
            Self::SocketIo(_) => {}
        }
    }
}

/// The receiving half of a [`Ws`].
#[derive(Debug)]
pub enum WsStream {
    /// tokio-tungstenite's.
    Tungstenite(SplitStream<WebSocketStream<Transport>>),
    /// The own client's.
    Own(Box<own::OwnStream>),
    /// A Socket.IO connection's ([`socketio`]).
    SocketIo(Box<socketio::SocketIoStream>),
}

impl WsStream {
    /// The next message; `None` once the connection ended.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        match self {
            Self::SocketIo(s) => s.next().await,
            plain => plain.next_frame().await,
        }
    }

    /// The next WebSocket message as it came (of a plain WebSocket's half).
    pub(crate) async fn next_frame(&mut self) -> Option<Result<Message>> {
        match self {
            Self::Tungstenite(s) => StreamExt::next(s).await.map(|r| r.map_err(Into::into)),
            Self::Own(s) => s.next().await,
            Self::SocketIo(_) => Some(Err(nested())),
        }
    }
}

/// Waits for the next text frame for which `accept` returns true, skipping others
/// (pings are answered while reading).
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
    ws.send_text(crate::stamp::join_frame(room, "join"))
        .await
        .context("sending join")?;
    wait_for_text(ws, |t| t.contains(r#""callbackId":"join""#)).await?;
    Ok(())
}

/// Sends the default application heartbeat (an empty text frame) and waits for the echo.
pub async fn heartbeat(ws: &mut Ws) -> Result<()> {
    ws.send_text(String::new())
        .await
        .context("sending heartbeat")?;
    wait_for_text(ws, str::is_empty).await
}

/// Closes `ws` politely, giving up after a short time.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close_now()).await;
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

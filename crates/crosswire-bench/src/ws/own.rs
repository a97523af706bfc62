//! The bench's own WebSocket client, built on crosswire's codec
//! ([`crosswire::protocol::ws`]) and its permessage-deflate ([`crosswire::protocol::deflate`]):
//! tungstenite 0.28 has no permessage-deflate, so connections run with `--permessage-deflate`
//! use this one.
//!
//! It offers [`deflate::CLIENT_OFFER`] (no context takeover either way), inflates what the
//! server compressed, compresses the text messages it sends of at least
//! [`super::ConnectOptions::deflate_min_size`] bytes, masks every frame, answers pings and
//! close frames. Received messages come out as tungstenite [`Message`]s, so the scenarios
//! treat both clients alike.

use super::transport::Transport;
use super::ConnectOptions;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use crosswire::protocol::deflate::{self, Params};
use crosswire::protocol::ws::{self as codec, Decoded, Decoder, OpCode, Role};
use std::hash::{BuildHasher, Hasher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Largest message accepted from the server (inflated).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Largest upgrade response head accepted.
const MAX_HEAD: usize = 16 << 10;

/// Masks (and the handshake key) from xorshift64*: frames must be masked, but a load
/// generator needs no cryptographic randomness for it.
#[derive(Debug)]
struct Masks(u64);

impl Masks {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::stamp::now_us());
        Self(h.finish() | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// The reading side: a buffer of received bytes and the decoder.
#[derive(Debug)]
struct Reader {
    buf: BytesMut,
    decoder: Decoder,
    /// A close frame was received (or the stream ended): nothing more comes.
    closed: bool,
}

/// A decoded frame as an owned tungstenite message.
fn owned(message: codec::Message<'_>) -> Message {
    match message {
        codec::Message::Text(t) => Message::Text(t.to_owned().into()),
        codec::Message::Binary(b) => Message::Binary(Bytes::copy_from_slice(b)),
        codec::Message::Ping(p) => Message::Ping(Bytes::copy_from_slice(p)),
        codec::Message::Pong(p) => Message::Pong(Bytes::copy_from_slice(p)),
        codec::Message::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
            code: CloseCode::from(f.code),
            reason: f.reason.to_owned().into(),
        })),
    }
}

impl Reader {
    fn new(buf: BytesMut, deflate: bool) -> Self {
        Self {
            buf,
            decoder: Decoder::new(Role::Client, MAX_MESSAGE).with_deflate(deflate),
            closed: false,
        }
    }

    /// The next complete message already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<Message>> {
        while !self.buf.is_empty() {
            match self.decoder.decode(&mut self.buf[..]) {
                Ok(Decoded::Message(m, used)) => {
                    let m = owned(m);
                    self.buf.advance(used);
                    self.closed = matches!(m, Message::Close(_));
                    return Ok(Some(m));
                }
                Ok(Decoded::Fragment(used)) => self.buf.advance(used),
                Ok(Decoded::Incomplete { needed }) => {
                    let wanted = needed.unwrap_or(0).saturating_sub(self.buf.len());
                    self.buf.reserve(wanted);
                    return Ok(None);
                }
                Err(e) => bail!("the server broke the protocol: {e}"),
            }
        }
        Ok(None)
    }

    /// The next message, reading from `io` as needed; `None` once the connection ended.
    async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Option<Result<Message>> {
        loop {
            if self.closed {
                return None;
            }
            match self.decode() {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            self.buf.reserve(4096);
            match io.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.closed = true;
                    return None;
                }
                Ok(_) => {}
                Err(e) => return Some(Err(anyhow!("reading: {e}"))),
            }
        }
    }
}

/// The writing side: frames queued until the next flush.
#[derive(Debug)]
struct Writer {
    buf: BytesMut,
    masks: Masks,
    /// How messages are compressed, when permessage-deflate was agreed.
    deflate: Option<Params>,
    min_size: usize,
}

impl Writer {
    fn new(masks: Masks, deflate: bool, min_size: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            masks,
            deflate: deflate.then(Params::default),
            min_size,
        }
    }

    /// Queues a text message, compressed when agreed and at least `min_size` bytes long.
    fn push_text(&mut self, text: &str) {
        let mask = self.masks.mask();
        match self.deflate {
            Some(params) if text.len() >= self.min_size => {
                let frame =
                    deflate::encode_frame(OpCode::Text, text.as_bytes(), Some(mask), params);
                self.buf.extend_from_slice(&frame);
            }
            _ => codec::encode_frame(&mut self.buf, OpCode::Text, text.as_bytes(), Some(mask)),
        }
    }

    /// Queues a control frame (payloads are cut to the 125 bytes a control frame may carry).
    fn push_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let payload = &payload[..payload.len().min(codec::MAX_CONTROL_PAYLOAD)];
        let mask = self.masks.mask();
        codec::encode_frame(&mut self.buf, opcode, payload, Some(mask));
    }

    /// Queues the answer to a received ping or close frame.
    fn answer(&mut self, message: &Message) {
        match message {
            Message::Ping(p) => self.push_control(OpCode::Pong, p),
            Message::Close(_) => self.push_close(),
            _ => {}
        }
    }

    fn push_close(&mut self) {
        self.push_control(OpCode::Close, &1000u16.to_be_bytes());
    }

    /// Writes everything queued. Cancel-safe: what was written is gone from the queue.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        if !self.buf.is_empty() {
            io.write_all_buf(&mut self.buf).await.context("writing")?;
        }
        io.flush().await.context("flushing")
    }
}

/// A connection of the own client.
#[derive(Debug)]
pub struct OwnWs {
    io: Transport,
    reader: Reader,
    writer: Writer,
    /// A pong or close answer is queued and must go out before the next read.
    answer_due: bool,
}

impl OwnWs {
    /// The next message from the server (pings and close frames are answered); `None` once
    /// the connection ended.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        if self.answer_due {
            if let Err(e) = self.writer.flush(&mut self.io).await {
                return Some(Err(e));
            }
            self.answer_due = false;
        }
        let message = self.reader.next(&mut self.io).await;
        if let Some(Ok(m @ (Message::Ping(_) | Message::Close(_)))) = &message {
            self.writer.answer(m);
            self.answer_due = true;
        }
        message
    }

    /// Queues a text message (sent at the next [`OwnWs::flush`]).
    pub fn feed_text(&mut self, text: &str) {
        self.writer.push_text(text);
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> Result<()> {
        self.answer_due = false;
        self.writer.flush(&mut self.io).await
    }

    /// Sends a close frame (1000) and shuts the stream down, without waiting for the
    /// server's answer.
    pub async fn close(&mut self) {
        if !self.reader.closed {
            self.writer.push_close();
        }
        if self.writer.flush(&mut self.io).await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }

    /// Whether permessage-deflate was agreed.
    pub fn deflate(&self) -> bool {
        self.writer.deflate.is_some()
    }

    /// The transport (for its byte counts).
    pub fn transport(&self) -> &Transport {
        &self.io
    }

    /// Splits into a sending and a receiving half (for a task that only sends while
    /// another drains); pings the receiving half sees are answered by the sending half.
    pub fn split(self) -> (OwnSink, OwnStream) {
        let (read, write) = tokio::io::split(self.io);
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = OwnSink {
            io: write,
            writer: self.writer,
            answers: rx,
        };
        let stream = OwnStream {
            io: read,
            reader: self.reader,
            answers: tx,
        };
        (sink, stream)
    }
}

/// The sending half of a split [`OwnWs`].
#[derive(Debug)]
pub struct OwnSink {
    io: WriteHalf<Transport>,
    writer: Writer,
    answers: mpsc::UnboundedReceiver<Message>,
}

impl OwnSink {
    fn take_answers(&mut self) {
        while let Ok(m) = self.answers.try_recv() {
            self.writer.answer(&m);
        }
    }

    /// Queues a text message (sent at the next [`OwnSink::flush`]).
    pub fn feed_text(&mut self, text: &str) {
        self.take_answers();
        self.writer.push_text(text);
    }

    /// Writes every queued frame (and the answers to pings received meanwhile).
    pub async fn flush(&mut self) -> Result<()> {
        self.take_answers();
        self.writer.flush(&mut self.io).await
    }

    /// Sends a close frame and shuts the sending side down.
    pub async fn close(&mut self) {
        self.writer.push_close();
        if self.writer.flush(&mut self.io).await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }
}

/// The receiving half of a split [`OwnWs`].
#[derive(Debug)]
pub struct OwnStream {
    io: ReadHalf<Transport>,
    reader: Reader,
    answers: mpsc::UnboundedSender<Message>,
}

impl OwnStream {
    /// The next message; pings are passed to the sending half to be answered.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        let message = self.reader.next(&mut self.io).await;
        if let Some(Ok(m @ Message::Ping(_))) = &message {
            let _ = self.answers.send(m.clone());
        }
        message
    }
}

/// The upgrade request for `url` with `key`, offering permessage-deflate when asked.
fn upgrade_request(url: &url::Url, key: &str, deflate: bool) -> String {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let extension = if deflate {
        format!("Sec-WebSocket-Extensions: {}\r\n", deflate::CLIENT_OFFER)
    } else {
        String::new()
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
    )
}

/// Reads until the end of the response head; returns its length (bytes after it stay in
/// `buf`: frames the server sent right after the upgrade).
async fn read_head(io: &mut Transport, buf: &mut BytesMut) -> Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > MAX_HEAD {
            bail!("upgrade response head longer than {MAX_HEAD} bytes");
        }
        buf.reserve(4096);
        if io
            .read_buf(buf)
            .await
            .context("reading the upgrade response")?
            == 0
        {
            bail!("the server closed the connection during the upgrade");
        }
    }
}

/// Checks the upgrade response: status 101, the accept key for `key`; returns whether
/// permessage-deflate was agreed.
fn check_response(head: &str, key: &str) -> Result<bool> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        bail!("upgrade refused: {status:?}");
    }
    let mut accept_ok = false;
    let mut deflate = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = value == codec::accept_key(key.as_bytes());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            deflate |= deflate::accepted(value);
        }
    }
    if !accept_ok {
        bail!("upgrade response has no valid Sec-WebSocket-Accept");
    }
    Ok(deflate)
}

/// Upgrades `io` to a WebSocket for `url` (with its `?id=`), offering permessage-deflate
/// when `options.deflate` is set; fails when the server declines it then.
pub async fn handshake(
    mut io: Transport,
    url: &url::Url,
    options: &ConnectOptions,
) -> Result<OwnWs> {
    let mut masks = Masks::new();
    let key_bytes = [
        masks.next_u64().to_ne_bytes(),
        masks.next_u64().to_ne_bytes(),
    ]
    .concat();
    let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
    let request = upgrade_request(url, &key, options.deflate);
    io.write_all(request.as_bytes())
        .await
        .context("sending the upgrade request")?;
    io.flush().await.context("sending the upgrade request")?;
    let mut buf = BytesMut::with_capacity(4096);
    let head_len = read_head(&mut io, &mut buf).await?;
    let head =
        std::str::from_utf8(&buf[..head_len]).context("upgrade response head is not UTF-8")?;
    let deflated = check_response(head, &key)?;
    if options.deflate && !deflated {
        bail!(
            "the server did not accept permessage-deflate (is it run with --permessage-deflate?)"
        );
    }
    buf.advance(head_len);
    Ok(OwnWs {
        io,
        reader: Reader::new(buf, deflated),
        writer: Writer::new(masks, deflated, options.deflate_min_size),
        answer_due: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_request_offers_deflate_and_keeps_the_query() {
        let url = url::Url::parse("wss://127.0.0.1:9000/?id=a").unwrap();
        let r = upgrade_request(&url, "k", true);
        assert!(
            r.starts_with("GET /?id=a HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"),
            "{r}"
        );
        assert!(r.contains(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            deflate::CLIENT_OFFER
        )));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!upgrade_request(&url, "k", false).contains("Extensions"));
    }

    #[test]
    fn responses_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                  sec-websocket-extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        assert!(check_response(ok, key).unwrap());
        let plain = "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(!check_response(plain, key).unwrap());
        assert!(check_response("HTTP/1.1 403 Forbidden\r\n\r\n", key).is_err());
        assert!(check_response("HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: x\r\n\r\n", key).is_err());
    }

    #[test]
    fn reader_inflates_and_keeps_partial_frames() {
        let text = "hello hello hello hello hello hello hello hello";
        let frame = deflate::encode_frame(OpCode::Text, text.as_bytes(), None, Params::default());
        let mut reader = Reader::new(BytesMut::new(), true);
        reader.buf.extend_from_slice(&frame[..3]);
        assert!(reader.decode().unwrap().is_none());
        reader.buf.extend_from_slice(&frame[3..]);
        reader
            .buf
            .extend_from_slice(&codec::server_frame(OpCode::Ping, b"p"));
        assert_eq!(reader.decode().unwrap(), Some(Message::text(text)));
        assert_eq!(
            reader.decode().unwrap(),
            Some(Message::Ping(Bytes::from_static(b"p")))
        );
        assert!(reader.decode().unwrap().is_none());
    }

    #[test]
    fn writer_masks_and_compresses_large_messages_only() {
        let mut w = Writer::new(Masks::new(), true, 64);
        w.push_text("short");
        let mut decoder = Decoder::new(Role::Server, 1 << 20).with_deflate(true);
        let mut buf = w.buf.split().to_vec();
        assert_eq!(buf[0], 0x81, "short message sent plain");
        assert!(matches!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Message(codec::Message::Text("short"), _)
        ));
        let long = "x".repeat(1000);
        w.push_text(&long);
        let mut buf = w.buf.split().to_vec();
        assert_eq!(
            buf[0],
            0x80 | deflate::RSV1 | 0x1,
            "long message compressed"
        );
        assert!(buf.len() < 100);
        match decoder.decode(&mut buf).unwrap() {
            Decoded::Message(codec::Message::Text(t), _) => assert_eq!(t, long),
            other => panic!("unexpected {other:?}"),
        }
    }
}

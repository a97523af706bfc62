//! The task that owns one connection: reads and dispatches frames, finishes blocked writes,
//! carries out close requests, and cleans up when the connection ends.
//!
//! Reads go into one buffer per thread, used by a synchronous function, so an idle
//! connection's task holds no read buffer. Only a frame split across reads is kept, in `pending`, which
//! is released as soon as it is consumed.

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::handler::Context;
use crate::limits::{Admitted, Buckets, RateLimitPolicy};
use crate::node::{Server, ServerInner};
use crate::socket::{Batch, Io, Socket, SocketShared};
use crate::sync::lock;
use crate::system::{self, SystemEvent};
use crosswire_protocol::frame::{self, Incoming};
use crosswire_protocol::ws::{self, Decoded, Decoder, Message, Role};

/// Size of the buffer one read goes into.
const READ_BUF: usize = 16 * 1024;

thread_local! {
    /// The buffer reads go into, one per thread, as uWebSockets shares one per event loop:
    /// an idle connection holds no read buffer, and no read pays for zeroing one.
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_BUF].into_boxed_slice());
}
/// Reads handled per readiness event before letting other tasks run.
const READS_PER_WAKE: usize = 8;
/// Most bytes one read appends to an incomplete large frame.
const MAX_READ_STEP: usize = 256 * 1024;

/// One non-blocking read. A short read means the kernel's receive buffer was empty at that
/// moment, so readiness is cleared then (tokio clears it only if no readiness event came
/// in the meantime): the task waits for the next event instead of making one more read
/// that could only answer `WouldBlock` — one system call fewer per wake-up. Returns the
/// bytes read and whether the buffer was drained; end of stream and errors end the
/// connection ([`Flow::Eof`]), `WouldBlock` is [`Flow::Continue`].
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> Result<(usize, bool), Flow> {
    loop {
        let mut short = None;
        let result = stream.try_io(Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(stream)).read(buf)?;
            if n > 0 && n < buf.len() {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        return match (result, short) {
            (_, Some(n)) => Ok((n, true)),
            (Ok(0), None) => Err(Flow::Eof),
            (Ok(n), None) => Ok((n, false)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => Err(Flow::Continue),
            (Err(e), None) if e.kind() == io::ErrorKind::Interrupted => continue,
            (Err(_), None) => Err(Flow::Eof),
        };
    }
}

/// What reading found.
enum Flow {
    /// Keep going.
    Continue,
    /// The peer closed the TCP connection (or it failed) without a close frame.
    Eof,
    /// The peer sent a close frame (answered already): its code and reason.
    PeerClose(u16, String),
    /// The peer broke the protocol; a close frame with this code was queued.
    ProtocolError(u16, String),
}

struct Conn {
    server: Server,
    socket: Socket,
    decoder: Decoder,
    pending: BytesMut,
    /// Size of the frame being assembled in `pending`, when known.
    need: usize,
    /// We sent a close frame.
    close_sent: bool,
    /// The rate limit's buckets, when one is set (boxed: a connection without a limit pays
    /// one pointer).
    buckets: Option<Box<Buckets>>,
    /// The connection's slot under the node's maximum, freed when the task ends.
    _admitted: Admitted,
    /// The stream, when it is not plain TCP (TLS, a Unix socket, …): the task reads and
    /// writes it.
    io: Option<Pin<Box<dyn Io>>>,
}

pub(crate) async fn run(
    server: Server,
    socket: Socket,
    leftover: BytesMut,
    admitted: Admitted,
    io: Option<Pin<Box<dyn Io>>>,
) {
    let inner: Arc<ServerInner> = Arc::clone(&server.inner);
    let mut conn = Conn {
        decoder: Decoder::new(Role::Server, inner.config.max_message_size)
            .with_deflate(socket.shared.deflate.is_some()),
        server,
        socket,
        pending: leftover,
        need: 0,
        close_sent: false,
        buckets: inner.config.rate_limit.map(|l| Box::new(Buckets::new(l))),
        _admitted: admitted,
        io,
    };
    // Opening and closing are logged at info inside the connection's span. With debug on
    // (one line per message) the whole task runs in it, so the handlers' own events carry
    // it too; otherwise no span is entered on every poll, nor kept for an idle connection.
    let opened = conn_span(&conn.socket, &inner.config.node_name);
    tracing::info!(parent: &opened, client = ?conn.socket.client_addr(), compressed = conn.socket.is_compressed(), "connection opened");
    let (code, reason) = if tracing::enabled!(tracing::Level::DEBUG) && !opened.is_disabled() {
        Box::pin(conn.drive(&inner).instrument(opened)).await
    } else {
        drop(opened);
        conn.drive(&inner).await
    };
    let closed = conn_span(&conn.socket, &inner.config.node_name);
    let traffic = conn.socket.stats();
    tracing::info!(parent: &closed, code, reason = %reason, messages_in = traffic.messages_in, messages_out = traffic.messages_out, "connection closed");
    conn.finish(code, reason);
}

/// A connection's span: its number, the id it is bound to now, and the node.
fn conn_span(socket: &Socket, node: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "conn",
        conn = socket.conn_id(),
        id = tracing::field::Empty,
        node = %node
    );
    if !span.is_disabled() {
        if let Some(id) = socket.id() {
            span.record("id", id.as_str());
        }
    }
    span
}

/// What woke a connection's task.
enum Woke {
    /// [`crate::socket::Wake::notify`]: a close or terminate request, a blocked write.
    Notified,
    /// The socket can take more bytes (it was blocked).
    Writable,
    /// The socket has bytes to read.
    Readable,
    /// Waiting for the socket failed.
    Failed,
    /// `n` bytes were read into `pending` from a stream the task owns.
    Read(usize),
    /// A stream the task owns ended.
    Eof,
    /// The close handshake took too long.
    Deadline,
}

/// Polls what a connection waits for, in priority order. Readiness is polled in place (no
/// future per wait), so an idle connection's task stays small. A stream the task owns
/// (`io`) is written here and read into `pending`.
fn poll_woke(
    shared: &SocketShared,
    cx: &mut std::task::Context<'_>,
    wait: Wait<'_>,
    deadline: &mut Deadline,
) -> Poll<Woke> {
    if shared.wake.poll_wait(cx).is_ready() {
        return Poll::Ready(Woke::Notified);
    }
    let woke = match (shared.tcp(), wait.io) {
        (Some(stream), _) => poll_tcp(stream, cx, wait.blocked, wait.wants_read),
        (None, Some(io)) => poll_task_io(shared, io, cx, wait.wants_read, wait.pending),
        (None, None) => Poll::Ready(Woke::Failed),
    };
    if woke.is_ready() {
        return woke;
    }
    deadline.poll(cx).map(|()| Woke::Deadline)
}

/// What one wait of the connection's task is for.
struct Wait<'a> {
    /// The kernel buffer was full (plain TCP).
    blocked: bool,
    wants_read: bool,
    /// The stream the task owns, when not plain TCP.
    io: Option<Pin<&'a mut (dyn Io + 'static)>>,
    /// Where a read from `io` goes.
    pending: &'a mut BytesMut,
}

fn poll_tcp(
    stream: &TcpStream,
    cx: &mut std::task::Context<'_>,
    blocked: bool,
    wants_read: bool,
) -> Poll<Woke> {
    if blocked {
        if let Poll::Ready(r) = stream.poll_write_ready(cx) {
            return Poll::Ready(if r.is_ok() {
                Woke::Writable
            } else {
                Woke::Failed
            });
        }
    }
    if wants_read {
        if let Poll::Ready(r) = stream.poll_read_ready(cx) {
            return Poll::Ready(if r.is_ok() {
                Woke::Readable
            } else {
                Woke::Failed
            });
        }
    }
    Poll::Pending
}

/// Writes the queue to a stream the task owns, then reads from it into `pending`.
fn poll_task_io(
    shared: &SocketShared,
    mut io: Pin<&mut (dyn Io + 'static)>,
    cx: &mut std::task::Context<'_>,
    wants_read: bool,
    pending: &mut BytesMut,
) -> Poll<Woke> {
    let had_queued = !lock(&shared.out).is_drained();
    match shared.poll_write_task(io.as_mut(), cx) {
        Poll::Ready(Err(_)) => return Poll::Ready(Woke::Failed),
        // The queue went out: the task looks at its state again (a close may be done).
        Poll::Ready(Ok(())) if had_queued => return Poll::Ready(Woke::Notified),
        _ => {}
    }
    if !wants_read {
        return Poll::Pending;
    }
    if pending.capacity() - pending.len() < READ_BUF {
        pending.reserve(READ_BUF);
    }
    match tokio_util::io::poll_read_buf(io, cx, pending) {
        Poll::Ready(Ok(0)) => Poll::Ready(Woke::Eof),
        Poll::Ready(Ok(n)) => Poll::Ready(Woke::Read(n)),
        Poll::Ready(Err(_)) => Poll::Ready(Woke::Failed),
        Poll::Pending => Poll::Pending,
    }
}

/// The end of the close handshake, once one started: a timer allocated only then, so open
/// connections carry none.
#[derive(Default)]
struct Deadline(Option<Pin<Box<tokio::time::Sleep>>>);

impl Deadline {
    /// Starts the timer, unless it runs already.
    fn arm(&mut self, after: Duration) {
        if self.0.is_none() {
            self.0 = Some(Box::pin(tokio::time::sleep(after)));
        }
    }

    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// The close code and reason of a connection that dropped.
fn dropped() -> (u16, String) {
    (1006, String::new())
}

/// Where a connection stands on closing.
struct Progress {
    /// The close code to report: ours when we closed first, the client's otherwise.
    outcome: Option<(u16, String)>,
    reading: ReadState,
    deadline: Deadline,
    /// We ended our side of the stream (after a protocol error).
    fin_sent: bool,
    close_timeout: Duration,
}

impl Progress {
    fn new(close_timeout: Duration) -> Self {
        Self {
            outcome: None,
            reading: ReadState::Open,
            deadline: Deadline::default(),
            fin_sent: false,
            close_timeout,
        }
    }
}

/// What [`Conn::check_out`] found.
enum Step {
    /// The connection is over.
    Done((u16, String)),
    /// Look again (a close frame was just queued).
    Again,
    /// Wait for the socket; `blocked`: the kernel buffer was full.
    Wait { blocked: bool },
}

/// What the read side is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Decoding and dispatching frames.
    Open,
    /// The client broke the protocol and was sent a close frame: read and drop what it
    /// still sends, so that closing does not reset the connection before the close frame
    /// reached it.
    Discard,
    /// The client's close frame arrived: nothing more to read.
    Done,
}

impl Conn {
    /// Runs the connection until it is over; returns the close code and reason for the
    /// `close` event: the code we sent when we closed, the client's when it closed, 1006 when
    /// the connection dropped.
    async fn drive(&mut self, inner: &Arc<ServerInner>) -> (u16, String) {
        let shared = Arc::clone(&self.socket.shared);
        let mut p = Progress::new(inner.config.close_timeout);
        if let Err(flow) = self.process_leftover() {
            if let Some(done) = self.after_read(flow, &mut p) {
                return done;
            }
        }
        loop {
            let blocked = match self.check_out(&shared, &mut p) {
                Step::Done(done) => return done,
                Step::Again => continue,
                Step::Wait { blocked } => blocked,
            };
            let wants_read = p.reading != ReadState::Done;
            let woke = std::future::poll_fn(|cx| {
                let wait = Wait {
                    blocked,
                    wants_read,
                    io: self.io.as_mut().map(|io| io.as_mut()),
                    pending: &mut self.pending,
                };
                poll_woke(&shared, cx, wait, &mut p.deadline)
            })
            .await;
            if let Some(done) = self.on_woke(&shared, woke, &mut p) {
                return done;
            }
        }
    }

    /// Looks at what other tasks asked of the socket (terminate, close) and whether the
    /// close handshake is over.
    fn check_out(&mut self, shared: &SocketShared, p: &mut Progress) -> Step {
        let mut out = lock(&shared.out);
        if out.terminate || out.failed {
            let terminated = out.terminate_reason.take().map(|b| *b);
            return Step::Done(p.outcome.take().or(terminated).unwrap_or_else(dropped));
        }
        let request = out.close_request.take().map(|b| *b);
        let (blocked, drained) = (out.blocked, out.is_drained());
        drop(out);
        if let Some((code, reason)) = request {
            if !self.close_sent {
                self.send_close(code, &reason);
                p.outcome.get_or_insert((code, reason.into()));
                p.deadline.arm(p.close_timeout);
                return Step::Again;
            }
        }
        if p.reading == ReadState::Done && drained {
            return Step::Done(p.outcome.take().unwrap_or_else(dropped));
        }
        if p.reading == ReadState::Discard && drained && !p.fin_sent {
            // Our close frame is out: end our side, so the client sees the end of the stream
            // and closes too, instead of both waiting for the deadline.
            p.fin_sent = true;
            shared.shutdown_write();
        }
        Step::Wait { blocked }
    }

    /// Handles what woke the task; the final result when the connection is over.
    fn on_woke(
        &mut self,
        shared: &SocketShared,
        woke: Woke,
        p: &mut Progress,
    ) -> Option<(u16, String)> {
        match woke {
            Woke::Notified => None,
            Woke::Writable => {
                shared.on_writable();
                None
            }
            Woke::Eof => Some(
                self.on_flow(Flow::Eof, &mut p.outcome, &mut p.reading)
                    .unwrap_or_else(dropped),
            ),
            Woke::Read(n) => {
                self.count_in(n);
                let flow = if p.reading == ReadState::Open {
                    self.process_task_read()
                } else {
                    self.pending.clear();
                    Flow::Continue
                };
                self.after_read(flow, p)
            }
            Woke::Readable => {
                let flow = if p.reading == ReadState::Open {
                    self.on_readable()
                } else {
                    self.discard_readable()
                };
                self.after_read(flow, p)
            }
            Woke::Failed | Woke::Deadline => Some(p.outcome.take().unwrap_or_else(dropped)),
        }
    }

    /// Reacts to what a read found; once reading stops, the close deadline runs.
    fn after_read(&mut self, flow: Flow, p: &mut Progress) -> Option<(u16, String)> {
        let done = self.on_flow(flow, &mut p.outcome, &mut p.reading);
        if done.is_none() && p.reading != ReadState::Open {
            p.deadline.arm(p.close_timeout);
        }
        done
    }

    /// A message over the rate limit: counted, then dropped with an `error` event, or the
    /// connection closed with 1008 (`Err`), per the policy.
    fn rate_limited(&mut self, policy: RateLimitPolicy) -> Result<(), Flow> {
        let stats = &self.server.inner.stats;
        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        match policy {
            RateLimitPolicy::Close => {
                let (code, reason) = (crate::close_code::POLICY_VIOLATION, "rate limit exceeded");
                tracing::debug!(conn = self.socket.conn_id(), "rate limit exceeded, closing");
                self.send_close(code, reason);
                Err(Flow::ProtocolError(code, reason.to_string()))
            }
            _ => {
                let error = system::SocketError::new("rate limit exceeded; message dropped");
                emit_if_handled(&self.server, &self.socket, || error);
                Ok(())
            }
        }
    }

    /// Processes the bytes that arrived with the upgrade request, before the first read.
    fn process_leftover(&mut self) -> Result<(), Flow> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let _batch = Batch::begin();
        self.process_pending()
    }

    /// Decodes and dispatches the complete frames in `pending`, keeping the bytes of an
    /// incomplete one; the buffer is released once drained (idle sockets hold none).
    fn process_pending(&mut self) -> Result<(), Flow> {
        let mut pending = std::mem::take(&mut self.pending);
        let used = self.process(&mut pending[..])?;
        pending.advance(used);
        self.pending = if pending.is_empty() {
            BytesMut::new()
        } else {
            pending
        };
        Ok(())
    }

    /// Reacts to what reading found; returns the final result when the connection is over.
    fn on_flow(
        &mut self,
        flow: Flow,
        outcome: &mut Option<(u16, String)>,
        reading: &mut ReadState,
    ) -> Option<(u16, String)> {
        match flow {
            Flow::Continue => None,
            Flow::Eof => Some(outcome.take().unwrap_or((1006, String::new()))),
            Flow::PeerClose(code, reason) => {
                if self.close_sent && outcome.is_some() && *reading == ReadState::Open {
                    // The client answered the close we started: done.
                    return outcome.take();
                }
                *reading = ReadState::Done;
                outcome.get_or_insert((code, reason));
                None
            }
            Flow::ProtocolError(code, reason) => {
                *reading = ReadState::Discard;
                outcome.get_or_insert((code, reason));
                None
            }
        }
    }

    /// Processes what a read from a stream the task owns put into `pending`.
    fn process_task_read(&mut self) -> Flow {
        let _batch = Batch::begin();
        self.process_pending().err().unwrap_or(Flow::Continue)
    }

    /// Reads and drops whatever the client still sends after a protocol error.
    fn discard_readable(&mut self) -> Flow {
        let Some(stream) = self.socket.shared.tcp() else {
            return Flow::Continue;
        };
        for _ in 0..READS_PER_WAKE {
            let mut buf = [0u8; READ_BUF];
            match stream.try_read(&mut buf) {
                Ok(0) => return Flow::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Eof,
            }
        }
        Flow::Continue
    }

    /// Queues a close frame and marks the socket closed for further sends.
    fn send_close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let frame = if ws::is_valid_close_code(code) {
            ws::close_frame(code, reason)
        } else {
            ws::server_frame(ws::OpCode::Close, b"")
        };
        self.socket.shared.push_final(frame);
    }

    fn on_readable(&mut self) -> Flow {
        let _batch = Batch::begin();
        if let Some(buckets) = &mut self.buckets {
            buckets.refill(std::time::Instant::now());
        }
        for _ in 0..READS_PER_WAKE {
            let read = if self.pending.is_empty() {
                self.read_direct()
            } else {
                self.read_pending()
            };
            match read {
                // The kernel's buffer is empty: wait for the next readiness event.
                Ok(true) => return Flow::Continue,
                Ok(false) => {}
                Err(flow) => return flow,
            }
        }
        Flow::Continue
    }

    /// One read into a stack buffer, processed in place; the bytes of an incomplete frame
    /// are kept in `pending`. Returns whether the kernel's buffer was drained.
    fn read_direct(&mut self) -> Result<bool, Flow> {
        READ_BUFFER.with(|cell| {
            // Connection tasks never nest on a thread; a fresh buffer covers it if one did.
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut().ok();
            let buf: &mut [u8] = match guard.as_deref_mut() {
                Some(shared) => shared,
                None => {
                    fresh.resize(READ_BUF, 0);
                    &mut fresh
                }
            };
            let stream = self.socket.shared.tcp().ok_or(Flow::Eof)?;
            let (n, drained) = read_some(stream, buf)?;
            self.count_in(n);
            let used = self.process(&mut buf[..n])?;
            if used < n {
                self.pending.extend_from_slice(&buf[used..n]);
            }
            Ok(drained)
        })
    }

    /// One read appended to the incomplete frame in `pending`, then processed.
    fn read_pending(&mut self) -> Result<bool, Flow> {
        let start = self.pending.len();
        // Room for the rest of the frame when its size is known (zero-filled a bounded
        // step at a time, so a large frame does not cost a large fill per read).
        let want = self
            .need
            .saturating_sub(start)
            .clamp(READ_BUF, MAX_READ_STEP);
        self.pending.resize(start + want, 0);
        let stream = self.socket.shared.tcp().ok_or(Flow::Eof)?;
        let read = read_some(stream, &mut self.pending[start..]);
        let n = read.as_ref().map_or(0, |(n, _)| *n);
        self.pending.truncate(start + n);
        let (n, drained) = read?;
        self.count_in(n);
        self.process_pending()?;
        Ok(drained)
    }

    fn count_in(&self, n: usize) {
        self.socket
            .shared
            .counters
            .bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Decodes and dispatches every complete frame of `buf`; returns the bytes used.
    fn process(&mut self, buf: &mut [u8]) -> Result<usize, Flow> {
        let mut pos = 0;
        while pos < buf.len() {
            match self.decoder.decode(&mut buf[pos..]) {
                Ok(Decoded::Message(message, used)) => {
                    pos += used;
                    let over = match (&mut self.buckets, data_len(&message)) {
                        (Some(buckets), Some(len)) => {
                            (!buckets.take(len)).then(|| buckets.policy())
                        }
                        _ => None,
                    };
                    if let Some(policy) = over {
                        self.rate_limited(policy)?;
                        continue;
                    }
                    let flow = dispatch(&self.server, &self.socket, message, &mut self.close_sent);
                    if !matches!(flow, Flow::Continue) {
                        return Err(flow);
                    }
                }
                Ok(Decoded::Fragment(used)) => pos += used,
                Ok(Decoded::Incomplete { needed }) => {
                    self.need = needed.unwrap_or(0);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "protocol error, closing");
                    self.server
                        .inner
                        .stats
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.server
                        .emit_system(&system::SocketError::new(e.to_string()), Some(&self.socket));
                    let code = e.close_code();
                    self.send_close(code, &e.to_string());
                    return Err(Flow::ProtocolError(code, e.to_string()));
                }
            }
        }
        Ok(pos)
    }

    fn finish(self, code: u16, reason: String) {
        let shared = &self.socket.shared;
        {
            let mut out = lock(&shared.out);
            out.closed = true;
            out.clear();
        }
        shared.shutdown_stream();
        self.server.inner.stats.closes.record(code);
        remove_socket(&self.server, &self.socket);
        self.server
            .emit_system(&system::Close::new(code, reason), Some(&self.socket));
    }
}

/// The size a data message counts for against the rate limit (`None`: a control frame).
fn data_len(message: &Message<'_>) -> Option<usize> {
    match message {
        Message::Text(text) => Some(text.len()),
        Message::Binary(data) => Some(data.len()),
        _ => None,
    }
}

/// Handles one complete message from a client.
fn dispatch(server: &Server, socket: &Socket, message: Message<'_>, close_sent: &mut bool) -> Flow {
    let shared = &socket.shared;
    match message {
        Message::Text(text) => on_text(server, socket, text),
        Message::Binary(data) => on_binary(server, socket, data),
        Message::Ping(data) => {
            let _ = shared.enqueue_in_batch(ws::server_frame(ws::OpCode::Pong, data));
        }
        Message::Pong(_) => {
            shared.pong_received();
            emit_if_handled(server, socket, || system::Pong {});
        }
        Message::Close(frame) => {
            let (code, reason) =
                frame.map_or((1005, String::new()), |f| (f.code, f.reason.to_string()));
            if !*close_sent {
                *close_sent = true;
                let reply = if frame.is_some() {
                    ws::close_frame(code, "")
                } else {
                    ws::server_frame(ws::OpCode::Close, b"")
                };
                shared.push_final(reply);
            }
            return Flow::PeerClose(code, reason);
        }
    }
    Flow::Continue
}

/// Raises a system event about `socket`, building it only when someone listens.
fn emit_if_handled<E: SystemEvent>(server: &Server, socket: &Socket, event: impl FnOnce() -> E) {
    if server.inner.system.has(E::NAME) {
        server.emit_system(&event(), Some(socket));
    }
}

/// A binary message: to the application's `binary` handlers when there are some, else
/// handled like text when it is UTF-8 (as the seed does), else dropped.
fn on_binary(server: &Server, socket: &Socket, data: &[u8]) {
    if server
        .inner
        .system
        .has(<system::Binary as SystemEvent>::NAME)
    {
        socket
            .shared
            .counters
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        let data = bytes::Bytes::copy_from_slice(data);
        server.emit_system(&system::Binary { data }, Some(socket));
        return;
    }
    match std::str::from_utf8(data) {
        Ok(text) => on_text(server, socket, text),
        Err(_) => {
            socket
                .shared
                .counters
                .messages_in
                .fetch_add(1, Ordering::Relaxed);
            server
                .inner
                .stats
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            let error = system::SocketError::new("binary message that is not UTF-8; dropped");
            server.emit_system(&error, Some(socket));
        }
    }
}

/// A text message: the application heartbeat, a client event, or the answer to a server →
/// client request.
fn on_text(server: &Server, socket: &Socket, text: &str) {
    let inner = &server.inner;
    let shared = &socket.shared;
    shared.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    emit_if_handled(server, socket, || system::RawMessage {
        text: text.to_string(),
    });
    if text == inner.config.heartbeat_message {
        let _ = shared.enqueue_in_batch(inner.heartbeat_frame.clone());
        emit_if_handled(server, socket, || system::ClientPing {});
        return;
    }
    match frame::parse_incoming(text) {
        Ok(Incoming::Event {
            event,
            payload,
            callback_id,
        }) => {
            tracing::debug!(event = %event, bytes = text.len(), "message");
            let Some(handlers) = inner.events.get(&event) else {
                inner.stats.unknown_events.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event = %event, "no handler for event");
                return;
            };
            let cx = Context::client(server, socket, &event, payload, callback_id.as_deref());
            crate::handler::dispatch(&inner.events, &handlers, cx);
        }
        Ok(Incoming::Ack { ack_id, payload }) => {
            if let Ok(n) = ack_id.parse::<u64>() {
                inner.acks.resolve(shared.conn_id, n, payload.to_owned());
            }
        }
        Err(e) => {
            inner.stats.malformed_frames.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "dropped malformed frame");
            server.emit_system(&system::SocketError::new(e.to_string()), Some(socket));
        }
    }
}

/// Removes a finished connection from the registry: id unbound (and announced), rooms left,
/// pending requests dropped.
fn remove_socket(server: &Server, socket: &Socket) {
    let mut unbound = None;
    server.change_rooms(|registry| {
        // Under the registry's lock, so that a node's totals count this socket's traffic
        // exactly once, whenever they are read: among the live sockets or the closed ones.
        server
            .inner
            .stats
            .closed_traffic
            .add(&socket.shared.traffic());
        let (changes, id) = registry.remove_conn(&socket.shared);
        unbound = id;
        changes
    });
    if let (Some(id), Some(cluster)) = (unbound, &server.inner.cluster) {
        cluster.announce_gone(&id);
    }
    server.inner.acks.drop_conn(socket.shared.conn_id);
    server.inner.conn_removed.notify_waiters();
}

//! One client connection: its handle ([`Socket`]), its outbound queue, and the write path.
//!
//! # The write path
//! A message is encoded once into a complete WebSocket frame ([`Bytes`]) and pushed, by
//! reference count, onto each recipient's queue. Pushing marks the socket *dirty* in a list
//! kept by the current thread. When the work that produced the deliveries is done — a batch of
//! frames read from one client, a batch of broker messages, or a single `emit` call from
//! application code — every dirty socket is written once, with one vectored `write` of all its
//! queued frames, straight from the producing thread. No task is woken per delivery: a
//! broadcast to 1,000 sockets costs 1,000 queue pushes and 1,000 syscalls, and a burst of 50
//! broadcasts read in one go still costs 1,000 syscalls.
//!
//! Only when the kernel buffer is full does the socket's own task take over: it waits until the
//! socket is writable and flushes the rest. The queue is bounded in bytes
//! ([`crate::ServerConfig::with_max_queue_bytes`]); what happens past the bound is the
//! [`crate::SlowClientPolicy`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use serde::Serialize;
use serde_json::value::RawValue;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::ack::Acks;
use crate::compression::Deflate;
use crate::config::SlowClientPolicy;
use crate::error::{RequestError, SendError};
use crate::handshake::{HeaderBlock, HeaderRetention};
use crate::params::RequestParams;
use crate::stats::Counters as NodeCounters;
pub use crate::stats::SocketStats;
use crate::sync::lock;
use crosswire_protocol::{frame, ws};

/// Most frames handed to one vectored write: a burst to a socket goes out in few, large
/// writes, and every write the kernel takes costs it a segment to build and acknowledge.
/// (Linux's `IOV_MAX` is 1,024.)
const MAX_IOVECS: usize = 512;

/// Per-socket counters of the read side (the outgoing ones are kept in [`Outbound`], under
/// the lock every delivery takes anyway).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The socket sits in some thread's dirty list (a flush of it is pending).
    dirty: bool,
    /// Frames queued, ever.
    messages_out: u64,
    /// Bytes written, ever.
    bytes_out: u64,
    /// The kernel buffer was full: the socket's task flushes when it is writable again.
    pub(crate) blocked: bool,
    /// No more frames are accepted (close frame queued, or the socket failed).
    pub(crate) closed: bool,
    /// A close was asked for: (code, reason) to send, for the socket's task.
    pub(crate) close_request: Option<Box<(u16, Box<str>)>>,
    /// Drop the connection without a close handshake.
    pub(crate) terminate: bool,
    /// The peer's write side failed.
    pub(crate) failed: bool,
    /// Close code and reason to report when terminated on purpose (e.g. queue full).
    pub(crate) terminate_reason: Option<Box<(u16, String)>>,
}

/// Wakes a connection's task: a single-waiter, lock-free notification with a stored permit
/// (a `notify` before the task waits makes its next wait return at once). Lighter than a
/// `tokio::sync::Notify`, whose waiter list takes a lock on every wait.
#[derive(Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Wakes the waiting task, or makes its next wait return at once.
    pub(crate) fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once a [`Wake::notify`] came (only the connection's own task waits).
    pub(crate) fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.take() {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration is seen here.
        if self.take() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    fn take(&self) -> bool {
        self.pending.load(Ordering::Acquire) && self.pending.swap(false, Ordering::AcqRel)
    }
}

impl Outbound {
    /// Drops the first `written` bytes of the queue (whole frames, then part of one).
    fn consume(&mut self, written: usize) {
        self.bytes_out += written as u64;
        self.queued_bytes -= written;
        let mut left = written;
        while left > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }

    /// Gives back the memory a burst made the emptied queue grow: idle sockets hold nothing.
    fn release_queue(&mut self) {
        if self.queue.capacity() > 16 {
            self.queue = VecDeque::new();
        }
    }
}

/// The frames at the front of `queue` as I/O slices (on the stack when few), for one
/// vectored write.
fn with_slices<R>(queue: &VecDeque<Bytes>, write: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
    const ON_STACK: usize = 32;
    if queue.len() <= ON_STACK {
        let mut slices = [IoSlice::new(&[]); ON_STACK];
        for (slot, frame) in slices.iter_mut().zip(queue) {
            *slot = IoSlice::new(frame);
        }
        write(&slices[..queue.len()])
    } else {
        let slices: Vec<IoSlice<'_>> = queue
            .iter()
            .take(MAX_IOVECS)
            .map(|f| IoSlice::new(f))
            .collect();
        write(&slices)
    }
}

/// A stream the socket's task owns and drives: TLS, a Unix socket, an in-memory duplex.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// How a socket's bytes move.
pub(crate) enum Transport {
    /// A plain TCP stream: written straight from whichever thread flushes (the zero-copy
    /// path: no task wake-up per delivery).
    Tcp(TcpStream),
    /// Any other stream, owned by the socket's task, which writes the queue when woken.
    Task,
}

/// Who a connection is, from its upgrade request.
pub(crate) struct Identity {
    pub(crate) params: RequestParams,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) headers: HeaderBlock,
    pub(crate) extensions: http::Extensions,
    /// The negotiated subprotocol.
    pub(crate) protocol: Option<Box<str>>,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<Deflate>,
}

/// The parts of a socket's identity that change after the upgrade.
#[derive(Default)]
struct Handshake {
    headers: HeaderBlock,
    extensions: http::Extensions,
}

/// What a socket needs from the node it belongs to: implemented by the node, so the socket
/// layer does not depend on it.
pub(crate) trait SocketHost: Send + Sync {
    /// The node's counters (queue-full drops, slow-client disconnects).
    fn node_counters(&self) -> &NodeCounters;
    /// The node's pending server → client requests.
    fn acks(&self) -> &Acks;
    /// How long a socket may stay in background before it is closed.
    fn background_close_time(&self) -> Duration;
}

pub(crate) struct SocketShared {
    pub(crate) conn_id: u64,
    pub(crate) transport: Transport,
    pub(crate) out: Mutex<Outbound>,
    /// Wakes the socket's task: blocked write, close or terminate requested.
    pub(crate) wake: Wake,
    /// A ping was sent and no pong has come back yet.
    pub(crate) awaiting_pong: AtomicBool,
    /// When the connection was accepted, in milliseconds since the Unix epoch.
    connected_at_ms: u64,
    /// When the last pong came, in milliseconds since the Unix epoch; 0 before the first.
    last_pong_ms: AtomicU64,
    /// Incremented by every `set_background` call, so a stale timer does nothing.
    pub(crate) background_generation: AtomicU64,
    pub(crate) background: AtomicBool,
    /// Set by the first binding to an id (for the unbound timeout).
    pub(crate) ever_bound: AtomicBool,
    /// The claim of its current binding in a cluster (see `cluster::Claim`); 0 when none.
    pub(crate) claim: AtomicU64,
    /// The negotiated subprotocol.
    protocol: Option<Box<str>>,
    /// permessage-deflate, when negotiated: data frames large enough go out compressed.
    pub(crate) deflate: Option<Deflate>,
    pub(crate) id: Mutex<Option<Arc<str>>>,
    pub(crate) params: RequestParams,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// The client's address through trusted proxies.
    client_ip: Option<IpAddr>,
    /// Kept request headers and the typed extensions. A std lock: every critical section
    /// is a lookup or an insert, never held across an `.await`.
    handshake: RwLock<Handshake>,
    pub(crate) counters: Counters,
    pub(crate) server: Weak<dyn SocketHost>,
    max_queue_bytes: usize,
    policy: SlowClientPolicy,
}

thread_local! {
    /// Sockets with queued frames not yet written, for the batch running on this thread.
    static DIRTY: RefCell<Vec<Arc<SocketShared>>> = const { RefCell::new(Vec::new()) };
    /// Nesting depth of [`Batch`] guards on this thread.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// While a `Batch` is alive on a thread, frames queued on that thread are written when the
/// outermost guard drops, one vectored write per socket. It is `!Send`, so it can never be
/// held across an `.await`.
pub(crate) struct Batch {
    _not_send: PhantomData<*const ()>,
}

impl Batch {
    pub(crate) fn begin() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Batch {
            _not_send: PhantomData,
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let v = d.get().saturating_sub(1);
            d.set(v);
            v
        });
        if depth == 0 {
            flush_dirty();
        }
    }
}

/// A batch with at least this many sockets to write is split with the flush helper thread.
const PARALLEL_FLUSH_MIN: usize = 128;

/// Flush helper threads asked for with [`set_flush_threads`]; `usize::MAX` = not set.
static FLUSH_THREADS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);
/// Whether the helpers were started (the setting is read once).
static FLUSH_STARTED: AtomicBool = AtomicBool::new(false);

/// Sets how many flush helper threads the process runs: OS threads that write half of a
/// large batch of sockets (a broadcast to 128 or more local sockets) in parallel with the
/// thread that produced it, which shortens the wait of the last recipients. 0 turns them off.
///
/// Default: the `CROSSWIRE_FLUSH_THREADS` environment variable when set, otherwise one fewer
/// than the machine's cores, at most 3 (none on one core). The helpers are shared by every
/// [`Server`](crate::Server) of the process and start with the first large batch; call this
/// before that. Returns `false`, changing nothing, when they were already started.
pub fn set_flush_threads(threads: usize) -> bool {
    if FLUSH_STARTED.load(Ordering::Acquire) {
        return false;
    }
    FLUSH_THREADS.store(threads, Ordering::Release);
    !FLUSH_STARTED.load(Ordering::Acquire)
}

fn flush_thread_count() -> usize {
    let set = FLUSH_THREADS.load(Ordering::Acquire);
    if set != usize::MAX {
        return set;
    }
    if let Some(n) = std::env::var("CROSSWIRE_FLUSH_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).min(3)
}

/// The flush helper threads (see [`set_flush_threads`]): a broadcast to 1,000 sockets is
/// 1,000 `writev` calls, and two cores finish them in half the time, which is what the last
/// recipient's latency depends on.
fn flush_helpers() -> Option<&'static std::sync::mpsc::SyncSender<Vec<Arc<SocketShared>>>> {
    static HELPERS: std::sync::OnceLock<
        Option<std::sync::mpsc::SyncSender<Vec<Arc<SocketShared>>>>,
    > = std::sync::OnceLock::new();
    HELPERS
        .get_or_init(|| {
            FLUSH_STARTED.store(true, Ordering::Release);
            let helpers = flush_thread_count();
            tracing::debug!(helpers, "flush helper threads");
            if helpers == 0 {
                return None;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Arc<SocketShared>>>(64);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..helpers {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("crosswire-flush-{i}"))
                    .spawn(move || loop {
                        let next = lock(&rx).recv();
                        let Ok(batch) = next else {
                            return;
                        };
                        for socket in &batch {
                            socket.flush();
                        }
                    });
                if spawned.is_err() {
                    return None;
                }
            }
            Some(tx)
        })
        .as_ref()
}

fn flush_dirty() {
    loop {
        let mut batch = DIRTY.with(|d| std::mem::take(&mut *d.borrow_mut()));
        if batch.is_empty() {
            return;
        }
        if batch.len() >= PARALLEL_FLUSH_MIN {
            if let Some(helpers) = flush_helpers() {
                let half = batch.split_off(batch.len() / 2);
                if let Err(
                    std::sync::mpsc::TrySendError::Full(half)
                    | std::sync::mpsc::TrySendError::Disconnected(half),
                ) = helpers.try_send(half)
                {
                    // Helpers busy: write everything here.
                    batch.extend(half);
                }
            }
        }
        for socket in &batch {
            socket.flush();
        }
        // Give the allocation back for the next batch, unless flushing queued more.
        DIRTY.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_empty() {
                batch.clear();
                *d = batch;
            }
        });
    }
}

impl SocketShared {
    pub(crate) fn new(
        conn_id: u64,
        transport: Transport,
        identity: Identity,
        server: Weak<dyn SocketHost>,
        max_queue_bytes: usize,
        policy: SlowClientPolicy,
    ) -> Self {
        Self {
            conn_id,
            transport,
            out: Mutex::new(Outbound::default()),
            wake: Wake::default(),
            awaiting_pong: AtomicBool::new(false),
            connected_at_ms: unix_ms(),
            last_pong_ms: AtomicU64::new(0),
            background_generation: AtomicU64::new(0),
            background: AtomicBool::new(false),
            ever_bound: AtomicBool::new(false),
            claim: AtomicU64::new(0),
            protocol: identity.protocol,
            deflate: identity.deflate,
            id: Mutex::new(None),
            params: identity.params,
            remote_addr: identity.remote,
            client_ip: identity.client_ip,
            handshake: RwLock::new(Handshake {
                headers: identity.headers,
                extensions: identity.extensions,
            }),
            counters: Counters::default(),
            server,
            max_queue_bytes,
            policy,
        }
    }

    /// Queues a complete frame. It is written when the current batch ends (immediately when
    /// no batch is running).
    pub(crate) fn enqueue(self: &Arc<Self>, frame: Bytes) -> Result<(), SendError> {
        let batch = Batch::begin();
        let result = self.enqueue_in_batch(frame);
        drop(batch);
        result
    }

    /// Like [`Self::enqueue`], for callers that hold a [`Batch`] already. A data frame is
    /// compressed first when the connection negotiated permessage-deflate.
    pub(crate) fn enqueue_in_batch(self: &Arc<Self>, frame: Bytes) -> Result<(), SendError> {
        let frame = match &self.deflate {
            Some(deflate) if deflate.wants(&frame) => self
                .server
                .upgrade()
                .and_then(|host| deflate.compress(&frame, host.node_counters()))
                .unwrap_or(frame),
            _ => frame,
        };
        self.push_in_batch(frame)
    }

    /// Queues `frame` exactly as it is (already compressed for this socket when it should
    /// be: see [`crate::compression::Outgoing`]), within the running [`Batch`].
    pub(crate) fn push_in_batch(self: &Arc<Self>, frame: Bytes) -> Result<(), SendError> {
        {
            let mut out = lock(&self.out);
            if out.closed {
                return Err(SendError::Closed);
            }
            // A frame larger than the bound still goes into an empty queue: the bound limits
            // how far a client may fall behind, not how large one message may be.
            if out.queued_bytes > 0 && out.queued_bytes + frame.len() > self.max_queue_bytes {
                drop(out);
                return Err(self.queue_full());
            }
            out.queued_bytes += frame.len();
            out.queue.push_back(frame);
            out.messages_out += 1;
            if out.dirty {
                return Ok(());
            }
            out.dirty = true;
        }
        DIRTY.with(|d| d.borrow_mut().push(Arc::clone(self)));
        Ok(())
    }

    fn queue_full(&self) -> SendError {
        if let Some(server) = self.server.upgrade() {
            server
                .node_counters()
                .dropped_messages
                .fetch_add(1, Ordering::Relaxed);
        }
        match self.policy {
            SlowClientPolicy::DropNewest => {}
            SlowClientPolicy::Disconnect => {
                tracing::debug!(conn = self.conn_id, "send queue full, disconnecting");
                let mut out = lock(&self.out);
                out.closed = true;
                out.terminate = true;
                out.terminate_reason = Some(Box::new((
                    crate::close_code::SEND_QUEUE_FULL,
                    "send queue full".to_string(),
                )));
                out.clear();
                drop(out);
                if let Some(server) = self.server.upgrade() {
                    server
                        .node_counters()
                        .slow_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.wake.notify();
            }
        }
        SendError::QueueFull
    }

    /// Writes as much of the queue as the kernel takes, without waiting.
    pub(crate) fn flush(&self) {
        let mut out = lock(&self.out);
        // Cleared under the lock: a frame queued from now on makes its queuer schedule a
        // new flush; one queued before is written here.
        out.dirty = false;
        if out.blocked || out.failed {
            return;
        }
        self.write_queued(&mut out);
    }

    /// Called by the socket's task when the socket became writable again.
    pub(crate) fn on_writable(&self) {
        let mut out = lock(&self.out);
        out.blocked = false;
        self.write_queued(&mut out);
    }

    /// One write of the queue's first frames: a plain write for one frame, a vectored write
    /// (slices on the stack when few) otherwise.
    fn write_frames(stream: &TcpStream, queue: &VecDeque<Bytes>) -> io::Result<usize> {
        match queue.len() {
            1 => stream.try_write(&queue[0]),
            _ => with_slices(queue, |slices| stream.try_write_vectored(slices)),
        }
    }

    fn write_queued(&self, out: &mut Outbound) {
        let Transport::Tcp(stream) = &self.transport else {
            // The socket's task owns the stream and writes the queue.
            if !out.queue.is_empty() {
                self.wake.notify();
            }
            return;
        };
        while !out.queue.is_empty() {
            match Self::write_frames(stream, &out.queue) {
                Ok(0) => {
                    out.failed = true;
                    self.wake.notify();
                    return;
                }
                Ok(written) => out.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.blocked = true;
                    self.wake.notify();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.write_failed(out, &e),
            }
        }
        out.release_queue();
    }

    fn write_failed(&self, out: &mut Outbound, e: &io::Error) {
        tracing::debug!(conn = self.conn_id, error = %e, "write failed");
        out.failed = true;
        out.queue.clear();
        out.queued_bytes = 0;
        self.wake.notify();
    }

    /// Writes the queue to a stream the socket's task owns (TLS, a Unix socket, …), as far
    /// as it takes without waiting; `Ready(Err)` when the connection failed.
    pub(crate) fn poll_write_task(
        &self,
        mut io: Pin<&mut (dyn Io + 'static)>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut out = lock(&self.out);
        if out.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        while !out.queue.is_empty() {
            let written = with_slices(&out.queue, |slices| {
                io.as_mut().poll_write_vectored(cx, slices)
            });
            match written {
                Poll::Ready(Ok(0)) => {
                    out.failed = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => out.consume(n),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.write_failed(&mut out, &e);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        out.release_queue();
        drop(out);
        // TLS keeps records in its own buffer until flushed.
        match io.poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Asks the socket's task to close with a close frame.
    pub(crate) fn request_close(&self, code: u16, reason: &str) {
        let mut out = lock(&self.out);
        if out.close_request.is_none() && !out.closed {
            out.close_request = Some(Box::new((code, reason.into())));
        }
        drop(out);
        self.wake.notify();
    }

    /// Asks the socket's task to drop the connection without a close handshake.
    pub(crate) fn request_terminate(&self) {
        let mut out = lock(&self.out);
        out.terminate = true;
        out.closed = true;
        drop(out);
        self.wake.notify();
    }

    /// The socket's traffic counters.
    pub(crate) fn traffic(&self) -> SocketStats {
        let c = &self.counters;
        let (messages_out, bytes_out) = {
            let out = lock(&self.out);
            (out.messages_out, out.bytes_out)
        };
        SocketStats {
            messages_in: c.messages_in.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            messages_out,
            bytes_out,
        }
    }

    /// Records a pong from the client.
    pub(crate) fn pong_received(&self) {
        self.awaiting_pong.store(false, Ordering::Release);
        self.last_pong_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Frames and bytes waiting in the send queue.
    fn queue_depth(&self) -> (usize, usize) {
        let out = lock(&self.out);
        (out.queue.len(), out.queued_bytes)
    }

    pub(crate) fn bound_id(&self) -> Option<Arc<str>> {
        lock(&self.id).clone()
    }

    /// Whether the socket was ever bound to an id.
    pub(crate) fn was_bound(&self) -> bool {
        self.ever_bound.load(Ordering::Acquire)
    }

    /// Whether the socket no longer accepts messages.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.out).closed
    }

    fn read_handshake(&self) -> RwLockReadGuard<'_, Handshake> {
        self.handshake.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_handshake(&self) -> RwLockWriteGuard<'_, Handshake> {
        self.handshake.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the request headers that `retention` does not keep.
    pub(crate) fn retain_headers(&self, retention: &HeaderRetention) {
        self.write_handshake().headers.retain(retention);
    }
}

/// Milliseconds since the Unix epoch, now (0 on a clock set before 1970).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A socket's counters and state at one moment, from [`Socket::info`] (and, with its node
/// and rooms, from the cluster-wide [`crate::Server::inspect`]). Times are milliseconds since
/// the Unix epoch, so the JSON form reads directly in a browser (`new Date(ms)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The connection's number on its node ([`Socket::conn_id`]).
    pub conn_id: u64,
    /// The id it is bound to, if any.
    pub id: Option<String>,
    /// The client's address (through trusted proxies), if known.
    pub client_addr: Option<String>,
    /// When the connection was accepted.
    pub connected_at_ms: u64,
    /// When the last protocol pong came from the client; `None` before the first.
    pub last_pong_at_ms: Option<u64>,
    /// Frames waiting in the send queue.
    pub queued_frames: usize,
    /// Bytes waiting in the send queue.
    pub queued_bytes: usize,
    /// Messages and bytes in and out.
    pub traffic: SocketStats,
    /// Whether the connection negotiated permessage-deflate.
    pub compressed: bool,
    /// Whether the client said it is in the background.
    pub background: bool,
}

impl SocketInfo {
    /// When the connection was accepted.
    pub fn connected_at(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(self.connected_at_ms)
    }

    /// When the last protocol pong came, if one did.
    pub fn last_pong_at(&self) -> Option<std::time::SystemTime> {
        self.last_pong_at_ms
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// A handle to one client connection. Cheap to clone; it stays valid (and inert) after the
/// connection closes.
#[derive(Clone)]
pub struct Socket {
    pub(crate) shared: Arc<SocketShared>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("conn_id", &self.shared.conn_id)
            .field("id", &self.id())
            .finish()
    }
}

impl PartialEq for Socket {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Socket {}

impl Socket {
    /// A number unique to this connection within this node.
    pub fn conn_id(&self) -> u64 {
        self.shared.conn_id
    }

    /// The id this socket is bound to, if any (see [`crate::Server::bind`]).
    pub fn id(&self) -> Option<String> {
        self.shared.bound_id().map(|s| s.to_string())
    }

    /// The connection's path and query parameters, parsed at upgrade time.
    pub fn params(&self) -> &RequestParams {
        &self.shared.params
    }

    /// One query parameter of the upgrade request (`ws://host/?id=7` → `query("id")`).
    pub fn query(&self, key: &str) -> Option<&str> {
        self.shared.params.get(key)
    }

    /// The request path (without its leading `/` unless configured otherwise).
    pub fn path(&self) -> &str {
        self.shared.params.path()
    }

    /// The TCP peer's address (a proxy's, behind one).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote_addr
    }

    /// The client's address: the TCP peer's, or — when the peer is one of
    /// [`crate::ServerConfig::with_trusted_proxies`] — the one those proxies reported in
    /// `Forwarded` / `X-Forwarded-For`.
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.shared.client_ip
    }

    /// The first value of request header `name` (case-insensitive), as text. Headers are
    /// kept per [`crate::ServerConfig::with_header_retention`].
    pub fn header(&self, name: &str) -> Option<String> {
        let handshake = self.shared.read_handshake();
        let value = handshake.headers.get(name)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// Every kept request header.
    pub fn headers(&self) -> http::HeaderMap {
        self.shared.read_handshake().headers.to_map()
    }

    /// The value of cookie `name` from the request's `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.shared.read_handshake().headers.cookie(name)
    }

    /// Stores a typed value on the socket (e.g. the authenticated user), returning the
    /// previous value of that type. Handlers read it as [`crate::Extension<T>`].
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.shared.write_handshake().extensions.insert(value)
    }

    /// A clone of the socket's value of type `T`.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.read_handshake().extensions.get::<T>().cloned()
    }

    /// Removes the socket's value of type `T`.
    pub fn remove_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.write_handshake().extensions.remove::<T>()
    }

    /// Traffic counters.
    pub fn stats(&self) -> SocketStats {
        self.shared.traffic()
    }

    /// The socket's counters and state at this moment: traffic, when it connected, when its
    /// last pong came, and what waits in its send queue.
    pub fn info(&self) -> SocketInfo {
        let shared = &self.shared;
        let (queued_frames, queued_bytes) = shared.queue_depth();
        let last_pong = shared.last_pong_ms.load(Ordering::Relaxed);
        SocketInfo {
            conn_id: shared.conn_id,
            id: self.id(),
            client_addr: self.client_addr().map(|a| a.to_string()),
            connected_at_ms: shared.connected_at_ms,
            last_pong_at_ms: (last_pong != 0).then_some(last_pong),
            queued_frames,
            queued_bytes,
            traffic: shared.traffic(),
            compressed: self.is_compressed(),
            background: self.is_background(),
        }
    }

    /// Whether the socket no longer accepts messages.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Sends an event to this socket.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, payload: &T) -> Result<(), SendError> {
        let frame = frame::encode_event(event, payload).map_err(|_| SendError::Encode)?;
        self.shared.enqueue(frame)
    }

    /// Sends an event whose payload is already JSON text.
    pub fn emit_raw(&self, event: &str, payload: &RawValue) -> Result<(), SendError> {
        self.shared.enqueue(frame::encode_event_raw(event, payload))
    }

    /// Whether the connection negotiated permessage-deflate ([`crate::PerMessageDeflate`]).
    pub fn is_compressed(&self) -> bool {
        self.shared.deflate.is_some()
    }

    /// The subprotocol negotiated at the upgrade (`Sec-WebSocket-Protocol`), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.shared.protocol.as_deref()
    }

    /// Sends a text message as it is (outside the event protocol: the client gets exactly
    /// `text`).
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.shared
            .enqueue(ws::server_frame(ws::OpCode::Text, text.as_bytes()))
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: impl AsRef<[u8]>) -> Result<(), SendError> {
        self.shared
            .enqueue(ws::server_frame(ws::OpCode::Binary, data.as_ref()))
    }

    /// Sends a pre-encoded WebSocket frame (for example one built with
    /// [`crosswire_protocol::frame::encode_event`] and shared between many sockets).
    pub fn send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        self.shared.enqueue(frame)
    }

    /// Sends a request and waits for the client's answer (beyond the seed protocol: the event
    /// carries an `ackId` that crosswire clients answer; older clients only see the event and
    /// the request times out).
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<Box<RawValue>, RequestError> {
        let server = self.shared.server.upgrade().ok_or(RequestError::Closed)?;
        let (ack_number, rx) = server.acks().register(self.shared.conn_id);
        let ack_id = ack_number.to_string();
        let frame = match frame::encode_request(event, payload, &ack_id) {
            Ok(f) => f,
            Err(e) => {
                server.acks().forget(self.shared.conn_id, ack_number);
                return Err(e.into());
            }
        };
        drop(server);
        if let Err(e) = self.shared.enqueue(frame) {
            if let Some(server) = self.shared.server.upgrade() {
                server.acks().forget(self.shared.conn_id, ack_number);
            }
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => {
                if let Some(server) = self.shared.server.upgrade() {
                    server.acks().forget(self.shared.conn_id, ack_number);
                }
                Err(RequestError::Timeout(timeout))
            }
        }
    }

    /// Closes the connection with a close frame. Codes 4010 and up are the application's
    /// (e.g. 4010 forced logout, 4011 authentication failed).
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.request_close(code, reason);
    }

    /// Drops the connection at once, without a close handshake.
    pub fn terminate(&self) {
        self.shared.request_terminate();
    }

    /// Marks the client as in background (or back in foreground). A socket that stays in
    /// background for [`crate::ServerConfig::with_enter_background_close_time`] is closed
    /// with code 1000 and reason `background timeout`.
    pub fn set_background(&self, background: bool) {
        let generation = self
            .shared
            .background_generation
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        self.shared.background.store(background, Ordering::Release);
        if !background {
            return;
        }
        let Some(server) = self.shared.server.upgrade() else {
            return;
        };
        let after = server.background_close_time();
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.background.load(Ordering::Acquire)
                && shared.background_generation.load(Ordering::Acquire) == generation
            {
                tracing::debug!(conn = shared.conn_id, "closing socket left in background");
                shared.request_close(1000, "background timeout");
            }
        });
    }

    /// Whether the socket is marked as in background.
    pub fn is_background(&self) -> bool {
        self.shared.background.load(Ordering::Acquire)
    }
}

/// A ping frame with an empty payload, shared by every sweep.
pub(crate) fn ping_frame() -> Bytes {
    ws::server_frame(ws::OpCode::Ping, b"")
}

impl Outbound {
    pub(crate) fn is_drained(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.queued_bytes = 0;
    }
}

impl SocketShared {
    /// Queues the last frame this socket will send (a close frame) and writes it now.
    pub(crate) fn push_final(&self, frame: Bytes) {
        let mut out = lock(&self.out);
        if out.failed || out.terminate {
            return;
        }
        out.closed = true;
        out.queued_bytes += frame.len();
        out.queue.push_back(frame);
        if !out.blocked {
            self.write_queued(&mut out);
        }
    }

    /// Sends FIN: no more bytes from us; reading goes on (plain TCP; the task shuts down a
    /// stream it owns itself).
    pub(crate) fn shutdown_write(&self) {
        if let Transport::Tcp(stream) = &self.transport {
            let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
        }
    }

    /// Ends the TCP connection now, even while other handles to this socket live on (a
    /// stream the task owns ends when the task drops it).
    pub(crate) fn shutdown_stream(&self) {
        if let Transport::Tcp(stream) = &self.transport {
            let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
        }
    }

    /// The plain TCP stream, when the socket has one.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match &self.transport {
            Transport::Tcp(stream) => Some(stream),
            Transport::Task => None,
        }
    }
}

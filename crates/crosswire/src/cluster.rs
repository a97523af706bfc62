//! The cluster core: what a node publishes through its [`Broker`] and what it does with what
//! it receives.
//!
//! # Channels
//! With the default prefix `crosswire:ws`:
//! - `crosswire:ws:all` — deliveries to everyone and to ids, id takeovers, room removals;
//!   every node subscribes.
//! - `crosswire:ws:room:<namespace>` — deliveries to rooms of one namespace; a node subscribes
//!   while it has a local room in that namespace (always, for preset namespaces).
//!
//! Every envelope carries the origin node's name; a node ignores its own echo, so local
//! sockets, already served directly, never get a message twice.
//!
//! Outgoing operations (publish, subscribe, unsubscribe) go through one ordered queue to one
//! task, so messages from this node reach the broker in the order they were sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::{Broker, BrokerMessage};
use crate::config::ServerConfig;
use crate::events::SystemEvent;
use crate::server::{queue_outgoing, Counters, Server};
use crate::socket::Batch;
use crosswire_protocol::envelope::{Body, Envelope, Target};

/// Capacity of the ordered queue of outgoing broker operations.
const OUTGOING_QUEUE: usize = 65_536;
/// Broker messages handled before written sockets are flushed.
const INCOMING_BATCH: usize = 256;

pub(crate) enum Outgoing {
    Publish(Arc<str>, Bytes),
    Subscribe(String),
    Unsubscribe(String),
}

pub(crate) struct Cluster {
    pub(crate) broker: Arc<dyn Broker>,
    node: Arc<str>,
    seq: AtomicU64,
    tx: mpsc::Sender<Outgoing>,
    all_channel: Arc<str>,
    room_prefix: String,
    stop: Arc<tokio::sync::Notify>,
}

impl Cluster {
    pub(crate) fn new(
        config: &ServerConfig,
        broker: Arc<dyn Broker>,
    ) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let prefix = &config.ws_channel_prefix;
        (
            Self {
                broker,
                node: Arc::from(config.node_name.as_str()),
                seq: AtomicU64::new(0),
                tx,
                all_channel: Arc::from(format!("{prefix}:all")),
                room_prefix: format!("{prefix}:room:"),
                stop: Arc::new(tokio::sync::Notify::new()),
            },
            rx,
        )
    }

    fn room_channel(&self, namespace: &str) -> String {
        format!("{}{namespace}", self.room_prefix)
    }

    fn envelope(&self, body: Body) -> Option<Bytes> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        match Envelope::new(&*self.node, seq, body).encode() {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                tracing::error!(error = %e, "could not encode envelope");
                None
            }
        }
    }

    pub(crate) fn publish_delivery(&self, stats: &Counters, target: Target, frame: Bytes) {
        let channel: Arc<str> = match &target {
            Target::Room { namespace, .. } => Arc::from(self.room_channel(namespace)),
            _ => Arc::clone(&self.all_channel),
        };
        if let Some(bytes) = self.envelope(Body::Deliver { target, frame }) {
            queue_outgoing(&self.tx, stats, Outgoing::Publish(channel, bytes));
        }
    }

    fn publish_control(&self, body: Body) {
        if let Some(bytes) = self.envelope(body) {
            if self
                .tx
                .try_send(Outgoing::Publish(Arc::clone(&self.all_channel), bytes))
                .is_err()
            {
                tracing::warn!("broker queue full; control message dropped");
            }
        }
    }

    pub(crate) fn announce_takeover(&self, id: &str) {
        self.publish_control(Body::Takeover { id: id.to_string() });
    }

    pub(crate) fn publish_remove_room(&self, namespace: &str, room: &str) {
        self.publish_control(Body::RemoveRoom {
            namespace: namespace.to_string(),
            room: room.to_string(),
        });
    }

    pub(crate) fn subscribe_namespace(&self, namespace: &str) {
        let _ = self
            .tx
            .try_send(Outgoing::Subscribe(self.room_channel(namespace)));
    }

    pub(crate) fn unsubscribe_namespace(&self, namespace: &str) {
        let _ = self
            .tx
            .try_send(Outgoing::Unsubscribe(self.room_channel(namespace)));
    }

    pub(crate) fn stop(&self) {
        self.stop.notify_waiters();
    }
}

/// Starts the node's broker tasks: the ordered outgoing queue and the receiver.
pub(crate) fn start(server: &Server, mut outgoing: mpsc::Receiver<Outgoing>) {
    let Some(cluster) = server.inner.cluster.as_ref() else {
        return;
    };
    let broker = Arc::clone(&cluster.broker);
    let mut initial: Vec<String> = vec![cluster.all_channel.to_string()];
    initial.extend(
        server
            .config()
            .preset_namespaces
            .iter()
            .map(|ns| cluster.room_channel(ns)),
    );
    let weak = Arc::downgrade(&server.inner);

    // Outgoing: one task, so operations reach the broker in order.
    let out_broker = Arc::clone(&broker);
    let out_weak = weak.clone();
    tokio::spawn(async move {
        for channel in initial {
            if let Err(e) = out_broker.subscribe(&channel).await {
                report(&out_weak, format!("subscribe {channel}: {e}"));
            }
        }
        while let Some(op) = outgoing.recv().await {
            let result = match &op {
                Outgoing::Publish(channel, bytes) => {
                    out_broker.publish(channel, bytes.clone()).await
                }
                Outgoing::Subscribe(channel) => out_broker.subscribe(channel).await,
                Outgoing::Unsubscribe(channel) => out_broker.unsubscribe(channel).await,
            };
            if let Err(e) = result {
                report(&out_weak, format!("broker: {e}"));
            }
        }
    });

    // Incoming.
    let messages = match broker.messages() {
        Ok(rx) => rx,
        Err(e) => {
            server.emit_system(&SystemEvent::ServerError(format!("broker: {e}")));
            return;
        }
    };
    tokio::spawn(receive(weak, messages));
}

fn report(weak: &std::sync::Weak<crate::server::ServerInner>, message: String) {
    tracing::warn!(%message, "broker error");
    if let Some(inner) = weak.upgrade() {
        Server { inner }.emit_system(&SystemEvent::ServerError(message));
    }
}

async fn receive(
    weak: std::sync::Weak<crate::server::ServerInner>,
    mut messages: mpsc::Receiver<BrokerMessage>,
) {
    let mut buf: Vec<BrokerMessage> = Vec::with_capacity(INCOMING_BATCH);
    loop {
        let stopped = {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let Some(cluster) = inner.cluster.as_ref() else {
                return;
            };
            let stop_signal = Arc::clone(&cluster.stop);
            drop(inner);
            let stop = stop_signal.notified();
            tokio::select! {
                n = messages.recv_many(&mut buf, INCOMING_BATCH) => n == 0,
                _ = stop => true,
            }
        };
        if stopped {
            return;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let server = Server { inner };
        let _batch = Batch::begin();
        for message in buf.drain(..) {
            handle(&server, &message);
        }
    }
}

fn handle(server: &Server, message: &BrokerMessage) {
    let envelope = match Envelope::decode(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(channel = %message.channel, error = %e, "dropped undecodable envelope");
            server.emit_system(&SystemEvent::ServerError(format!(
                "undecodable envelope on {}: {e}",
                message.channel
            )));
            return;
        }
    };
    if envelope.origin == server.node_name() {
        return;
    }
    match envelope.body {
        Body::Deliver { target, frame } => {
            server.deliver_local(&target, &frame);
        }
        Body::Takeover { id } => {
            if let Some(socket) = server.socket(&id) {
                tracing::debug!(id = %id, origin = %envelope.origin, "id bound on another node");
                server.unbind(&id);
                server.leave_all(&id);
                socket.close(
                    server.config().takeover_close_code,
                    "taken over by a new connection",
                );
            }
        }
        Body::RemoveRoom { namespace, room } => server.remove_room_local(&namespace, &room),
    }
}

//! A node's publish connection: one task draining the node's FIFO publish queue onto one
//! redis-rs multiplexed connection in pipelined batches, PINGing it, and re-connecting.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::health::{HealthEventKind, Role};
use crate::shared::{lock, Node, PublishJob, Shared};

/// Runs until the broker is dropped (the task is aborted then).
pub(crate) async fn run(
    shared: Arc<Shared>,
    node: Arc<Node>,
    mut jobs: mpsc::Receiver<PublishJob>,
) {
    let config = &shared.config;
    let mut delay = config.reconnect_delay;
    let mut ever_up = false;
    let mut down_reported = false;
    loop {
        match connect(&shared, &node, ever_up).await {
            Ok(mut connection) => {
                delay = config.reconnect_delay;
                node.publisher_healthy.store(true, Ordering::Release);
                let event = if ever_up {
                    HealthEventKind::Recovered
                } else {
                    HealthEventKind::Connected
                };
                ever_up = true;
                *lock(&node.connection) = Some(connection.clone());
                shared.report(&node, Role::Publisher, event, None);
                let (event, error) = serve(&shared, &node, &mut connection, &mut jobs).await;
                lock(&node.connection).take();
                node.publisher_healthy.store(false, Ordering::Release);
                down_reported = true;
                shared.report(&node, Role::Publisher, event, Some(error));
            }
            Err(error) => {
                if down_reported {
                    tracing::debug!(node = %node.name, %error, "redis publish connection: reconnect failed");
                } else {
                    down_reported = true;
                    shared.report(
                        &node,
                        Role::Publisher,
                        HealthEventKind::ConnectFailed,
                        Some(error),
                    );
                }
            }
        }
        // Wait before the next attempt; what is queued here meanwhile goes to other nodes.
        let until = Instant::now() + delay;
        delay = (delay * 2).min(config.reconnect_delay_max);
        loop {
            tokio::select! {
                () = sleep_until(until) => break,
                job = jobs.recv() => match job {
                    Some(job) => {
                        node.counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                        shared.reroute(job, "node is down");
                    }
                    None => return,
                },
            }
        }
    }
}

/// Connects, checks the connection with a PING and loads the history scripts; on a
/// reconnect (`again`), starts a new history generation before anything is published there.
async fn connect(
    shared: &Shared,
    node: &Node,
    again: bool,
) -> Result<MultiplexedConnection, String> {
    let config = &shared.config;
    let client = client(shared, node).map_err(|e| e.to_string())?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout));
    let mut connection = timeout(
        config.connect_timeout,
        client.get_multiplexed_async_connection_with_config(&settings),
    )
    .await
    .map_err(|_| format!("connect timed out after {:?}", config.connect_timeout))?
    .map_err(|e| e.to_string())?;
    ping(shared, node, &mut connection)
        .await
        .map_err(|(_, e)| e)?;
    let limit = config.command_timeout;
    let scripts = crate::history::load_scripts(&mut connection, shared.sharded());
    within(limit, "SCRIPT LOAD", scripts).await?;
    // A Redis Cluster shard's generation is its master's replication id: nothing to bump.
    if again && !shared.sharded() {
        let bump = crate::history::bump_generation(&mut connection);
        within(limit, "INCR of the history generation", bump).await?;
    }
    Ok(connection)
}

/// Runs a setup command with a time limit; what failed, as text.
async fn within<T>(
    limit: std::time::Duration,
    what: &str,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    timeout(limit, command)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// A redis-rs client for the node, with the broker's TLS settings on a `rediss://` node.
fn client(shared: &Shared, node: &Node) -> redis::RedisResult<redis::Client> {
    let info = node.config.info.clone();
    #[cfg(feature = "tls")]
    if node.config.tls && shared.config.tls.is_custom() {
        return redis::Client::build_with_tls(
            info,
            crate::tls::redis_certificates(&shared.config.tls),
        );
    }
    #[cfg(not(feature = "tls"))]
    let _ = shared;
    redis::Client::open(info)
}

/// PINGs, recording the latency; the failure kind and text otherwise.
async fn ping(
    shared: &Shared,
    node: &Node,
    connection: &mut MultiplexedConnection,
) -> Result<(), (HealthEventKind, String)> {
    let started = Instant::now();
    let limit = shared.config.redis_ping_timeout;
    match timeout(limit, redis::cmd("PING").query_async::<String>(connection)).await {
        Ok(Ok(_)) => {
            node.set_latency(started.elapsed());
            Ok(())
        }
        Ok(Err(e)) if e.is_timeout() => Err((
            HealthEventKind::PingTimeout,
            format!("no PONG within {limit:?}"),
        )),
        Ok(Err(e)) => Err((HealthEventKind::Disconnected, e.to_string())),
        Err(_) => Err((
            HealthEventKind::PingTimeout,
            format!("no PONG within {limit:?}"),
        )),
    }
}

/// The pipeline of a batch: one `PUBLISH` (`SPUBLISH` when `sharded`) or recording script
/// per job. Replies are kept when `sharded` (one per job, errors included), ignored
/// otherwise (the first error reply fails the whole pipeline).
fn publish_pipeline(batch: &[PublishJob], sharded: bool) -> redis::Pipeline {
    let verb = if sharded { "SPUBLISH" } else { "PUBLISH" };
    let mut pipe = redis::pipe();
    if sharded {
        pipe.ignore_errors();
    }
    for job in batch {
        match &job.record {
            None => {
                pipe.cmd(verb)
                    .arg(job.channel.as_bytes())
                    .arg(job.payload.as_ref());
            }
            Some(r) => crate::history::add_publish(
                &mut pipe,
                sharded,
                &job.channel,
                &r.stream,
                &job.payload,
                &r.retention,
            ),
        }
        if !sharded {
            pipe.ignore();
        }
    }
    pipe
}

/// Publishes a batch on a single Redis (or one of several) and settles it: done when every
/// command succeeded; otherwise the connection is off (`Err`) and every job goes elsewhere
/// (the batch may be partly published: at least once, never lost silently).
async fn publish_plain(
    shared: &Shared,
    node: &Node,
    connection: &mut MultiplexedConnection,
    batch: &mut Vec<PublishJob>,
) -> Result<(), String> {
    let limit = shared.config.command_timeout;
    let pipe = publish_pipeline(batch, false);
    let sent = Instant::now();
    let error = match timeout(limit, pipe.query_async::<()>(connection)).await {
        Ok(Ok(())) => {
            node.counters.publish_latency.observe(sent.elapsed());
            let count = batch.len() as u64;
            node.counters.published.fetch_add(count, Ordering::Relaxed);
            tracing::trace!(node = %node.name, count, "published batch");
            for job in batch.drain(..) {
                job.finish(Ok(()));
            }
            return Ok(());
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("PUBLISH not answered within {limit:?}"),
    };
    Err(reroute_all(shared, node, batch.drain(..), error))
}

/// Publishes a batch on a Redis Cluster master and settles each job by its own reply. A job
/// refused by the cluster (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`: the connection is fine,
/// the slot map is not) is parked for its slot's next master, and with it every later job of
/// the same slot in the batch, so that a slot's order holds; the other slots' jobs are done.
/// So of a batch half refused during a failover or a resharding, only a job accepted after a
/// refused one of its slot can be published twice. Any other failure ends the connection
/// (`Err`): the jobs not yet settled go elsewhere (at least once).
async fn publish_sharded(
    shared: &Shared,
    node: &Node,
    connection: &mut MultiplexedConnection,
    batch: &mut Vec<PublishJob>,
) -> Result<(), String> {
    let limit = shared.config.command_timeout;
    let pipe = publish_pipeline(batch, true);
    let sent = Instant::now();
    let outcome = timeout(
        limit,
        pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(connection),
    );
    let replies = match outcome.await {
        Ok(Ok(replies)) => replies,
        Ok(Err(e)) => return Err(reroute_all(shared, node, batch.drain(..), e.to_string())),
        Err(_) => {
            let error = format!("SPUBLISH not answered within {limit:?}");
            return Err(reroute_all(shared, node, batch.drain(..), error));
        }
    };
    node.counters.publish_latency.observe(sent.elapsed());
    let mut refused_slots: HashSet<u16> = HashSet::new();
    let mut replies = replies.into_iter();
    let mut jobs = batch.drain(..);
    while let Some(job) = jobs.next() {
        let slot = crate::slots::slot_of(job.channel.as_bytes());
        let error = match replies.next() {
            Some(Ok(_)) if !refused_slots.contains(&slot) => {
                node.counters.published.fetch_add(1, Ordering::Relaxed);
                job.finish(Ok(()));
                continue;
            }
            Some(Ok(_)) => {
                shared.reroute(job, "an earlier message of its slot was refused");
                continue;
            }
            Some(Err(e)) if e.is_cluster_error() => {
                let error = e.to_string();
                tracing::debug!(node = %node.name, %error, "publish refused by the cluster");
                refused_slots.insert(slot);
                reroute_all(shared, node, [job], error);
                continue;
            }
            Some(Err(e)) => e.to_string(),
            None => "a reply is missing".to_string(),
        };
        return Err(reroute_all(
            shared,
            node,
            std::iter::once(job).chain(jobs),
            error,
        ));
    }
    Ok(())
}

/// Sends `jobs` elsewhere (or parks them) after `error`, counting them as failed; the error.
fn reroute_all(
    shared: &Shared,
    node: &Node,
    jobs: impl IntoIterator<Item = PublishJob>,
    error: String,
) -> String {
    for job in jobs {
        node.counters
            .publish_failures
            .fetch_add(1, Ordering::Relaxed);
        shared.reroute(job, &error);
    }
    error
}

/// Publishes queued jobs in batches and PINGs until the connection fails; why it failed.
async fn serve(
    shared: &Shared,
    node: &Node,
    connection: &mut MultiplexedConnection,
    jobs: &mut mpsc::Receiver<PublishJob>,
) -> (HealthEventKind, String) {
    let config = &shared.config;
    let mut batch: Vec<PublishJob> = Vec::with_capacity(config.publish_batch);
    let mut next_ping = Instant::now() + config.redis_ping_interval;
    let mut last_reply = Instant::now();
    loop {
        tokio::select! {
            // Publishing first: a PING waits for the batch in flight anyway.
            biased;
            received = jobs.recv_many(&mut batch, config.publish_batch) => {
                if received == 0 {
                    return (HealthEventKind::Disconnected, "broker closed".into());
                }
                let published = if shared.sharded() {
                    publish_sharded(shared, node, connection, &mut batch).await
                } else {
                    publish_plain(shared, node, connection, &mut batch).await
                };
                match published {
                    Ok(()) => last_reply = Instant::now(),
                    Err(error) => return (HealthEventKind::Disconnected, error),
                }
            }
            () = sleep_until(next_ping) => {
                next_ping = Instant::now() + config.redis_ping_interval;
                if !config.forced_ping && last_reply.elapsed() < config.redis_ping_interval {
                    continue;
                }
                if let Err(failure) = ping(shared, node, connection).await {
                    return failure;
                }
                last_reply = Instant::now();
            }
            () = node.check_now.notified() => {
                if let Err(failure) = ping(shared, node, connection).await {
                    return failure;
                }
                last_reply = Instant::now();
            }
        }
    }
}

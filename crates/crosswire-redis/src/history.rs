//! History in Redis: one Redis Stream per history stream, written and published by one Lua
//! script so that a message's offset, its place in the stream and its publication are one
//! atomic step.
//!
//! For stream `S` the keys are `S` (a Redis Stream of entries `o <offset> d <payload>`) and
//! `S:meta` (a hash: `e` the epoch, `o` the last offset). Names given by the node contain a
//! `{…}` hash tag, so both keys of a stream fall in one Redis Cluster slot.
//!
//! - **Publish** (`EVALSHA`, pipelined with the plain `PUBLISH`es): creates the epoch when the
//!   meta hash is missing (Redis restarted without persistence, or the stream expired), takes
//!   the next offset, `XADD`s with `MAXLEN ~ max_len`, trims entries older than the window
//!   (`XTRIM MINID`), renews both keys' expiry, and `PUBLISH`es
//!   [`MARKER`] `<offset> ' ' <epoch> ' ' <payload>`. The marker starts with `0xC1`, a byte
//!   no MessagePack value and no crosswire envelope begins with, then a NUL and `cw:`, so a
//!   subscriber tells positioned messages apart without knowing which channels carry them (a
//!   custom channel's payload must not begin with these five bytes).
//! - **Read** (`EVALSHA` on the same connection): the epoch (created if missing, so a first
//!   joiner gets the epoch later messages will carry), the last offset, and the entries after
//!   the offset asked for — at most `max_len`, none older than the window.
//!
//! **Generations.** The epoch clients see is the stream's epoch and the Redis node's
//! *generation* ([`GENERATION_KEY`]), `<epoch>.<generation>`. A broker whose publish
//! connection to a node comes back after a loss bumps the generation before it publishes
//! there again: while the node was away its streams' messages went to another node, so the
//! history it still holds (it was frozen or cut off, not restarted) has a gap, and every
//! position of before must fail to recover rather than skip what was sent elsewhere.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use crosswire_core::history::META_TTL;
use crosswire_core::{BrokerError, Position, Retention, StreamRead};
use redis::aio::MultiplexedConnection;

/// How a positioned message begins.
pub(crate) const MARKER: &[u8] = b"\xC1\x00cw:";

/// The Redis node's history generation (see the module docs); shared by every crosswire
/// cluster on that Redis.
pub const GENERATION_KEY: &str = "crosswire:history:generation";

/// Makes the epoch when the meta hash has none (shared by both scripts); `{generation}` is
/// the Lua expression of the generation shown after the epoch.
const ENSURE_EPOCH: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
end
local shown = epoch .. '.' .. GENERATION
";

/// The generation of a plain Redis node: [`GENERATION_KEY`] (KEYS[3]).
const NODE_GENERATION: &str = "(redis.call('GET', KEYS[3]) or '0')";

/// The generation of a Redis Cluster shard: its master's replication id (8 characters),
/// which a replica promoted in a failover changes — what it holds may lack the last
/// messages its old master took.
const SHARD_GENERATION: &str =
    "string.sub(string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or '0', 1, 8)";

/// ARGV: channel, payload, max_len, ttl_ms, meta_ttl_ms.
const PUBLISH_BODY: &str = r"
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'o', offset, 'd', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', now - tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(VERB, ARGV[1], string.char(193, 0) .. 'cw:' .. offset .. ' ' .. shown .. ' ' .. ARGV[2])
return offset
";

/// ARGV: since (-1: none), max_len, ttl_ms, meta_ttl_ms. Returns `{epoch, top, o1, d1, o2,
/// d2, …}`, oldest first.
const READ_BODY: &str = r"
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local top = tonumber(redis.call('HGET', KEYS[2], 'o'))
local since = tonumber(ARGV[1])
local out = {shown, tostring(top)}
local want = top - since
if since < 0 or want <= 0 or want > tonumber(ARGV[2]) then
  return out
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = math.max(0, now - tonumber(ARGV[3]))
local got = redis.call('XREVRANGE', KEYS[1], '+', oldest, 'COUNT', want)
for i = #got, 1, -1 do
  local fields = got[i][2]
  local o, d
  for j = 1, #fields, 2 do
    if fields[j] == 'o' then o = fields[j + 1] elseif fields[j] == 'd' then d = fields[j + 1] end
  end
  if o and d and tonumber(o) > since then
    out[#out + 1] = o
    out[#out + 1] = d
  end
end
return out
";

/// The two scripts of one mode.
struct Scripts {
    publish: redis::Script,
    read: redis::Script,
}

impl Scripts {
    fn new(generation: &str, verb: &str) -> Self {
        let head = ENSURE_EPOCH.replace("GENERATION", generation);
        Self {
            publish: redis::Script::new(&format!(
                "{head}{}",
                PUBLISH_BODY.replace("VERB", &format!("'{verb}'"))
            )),
            read: redis::Script::new(&format!("{head}{READ_BODY}")),
        }
    }
}

/// Plain Redis nodes: KEYS stream, meta, generation; `PUBLISH`.
static NODE: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(NODE_GENERATION, "PUBLISH"));
/// Redis Cluster: KEYS stream, meta (one slot, with the channel); `SPUBLISH`.
static SHARD: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(SHARD_GENERATION, "SPUBLISH"));

fn scripts(sharded: bool) -> &'static Scripts {
    if sharded {
        &SHARD
    } else {
        &NODE
    }
}

/// The meta key of stream `stream`.
fn meta_key(stream: &str) -> String {
    format!("{stream}:meta")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Loads both scripts on a fresh connection, so pipelined `EVALSHA`s find them.
pub(crate) async fn load_scripts(
    connection: &mut MultiplexedConnection,
    sharded: bool,
) -> redis::RedisResult<()> {
    let scripts = scripts(sharded);
    scripts.publish.load_async(connection).await?;
    scripts.read.load_async(connection).await?;
    Ok(())
}

/// Starts a new generation on a node this broker's publish connection came back to.
pub(crate) async fn bump_generation(
    connection: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    redis::cmd("INCR")
        .arg(GENERATION_KEY)
        .query_async::<i64>(connection)
        .await
        .map(drop)
}

/// Adds a recorded publish to a pipeline (its reply is for the caller to ignore or keep).
pub(crate) fn add_publish(
    pipe: &mut redis::Pipeline,
    sharded: bool,
    channel: &str,
    stream: &str,
    payload: &[u8],
    retention: &Retention,
) {
    let command = pipe
        .cmd("EVALSHA")
        .arg(scripts(sharded).publish.get_hash())
        .arg(if sharded { 2 } else { 3 })
        .arg(stream)
        .arg(meta_key(stream));
    if !sharded {
        command.arg(GENERATION_KEY);
    }
    command
        .arg(channel.as_bytes())
        .arg(payload)
        .arg(retention.max_len)
        .arg(millis(retention.ttl))
        .arg(millis(META_TTL));
}

/// Reads a stream (see the module docs).
pub(crate) async fn read(
    connection: &mut MultiplexedConnection,
    sharded: bool,
    stream: &str,
    since: Option<u64>,
    retention: &Retention,
) -> Result<StreamRead<Bytes>, BrokerError> {
    let since_arg = since.map_or(-1i128, i128::from);
    let mut invocation = scripts(sharded).read.key(stream);
    invocation.key(meta_key(stream));
    if !sharded {
        invocation.key(GENERATION_KEY);
    }
    let reply: Vec<Vec<u8>> = invocation
        .arg(since_arg.to_string())
        .arg(retention.max_len)
        .arg(millis(retention.ttl))
        .arg(millis(META_TTL))
        .invoke_async(connection)
        .await
        .map_err(|e| BrokerError::Backend(format!("history read of {stream:?}: {e}")))?;
    parse_read(reply, since)
        .ok_or_else(|| BrokerError::Backend(format!("history read of {stream:?}: malformed reply")))
}

fn parse_read(reply: Vec<Vec<u8>>, since: Option<u64>) -> Option<StreamRead<Bytes>> {
    let mut parts = reply.into_iter();
    let epoch: Arc<str> = Arc::from(std::str::from_utf8(&parts.next()?).ok()?);
    let top = parse_u64(&parts.next()?)?;
    let mut entries = Vec::new();
    while let (Some(offset), Some(data)) = (parts.next(), parts.next()) {
        entries.push((parse_u64(&offset)?, Bytes::from(data)));
    }
    let complete = since.is_some_and(|since| {
        since <= top
            && entries
                .first()
                .map_or(since == top, |(o, _)| *o == since + 1)
            && entries.len() as u64 == top - since
    });
    Some(StreamRead {
        epoch,
        top,
        entries,
        complete,
    })
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Splits a positioned message into its position and payload; `None` for any other message.
pub(crate) fn split_positioned(payload: &Bytes) -> Option<(Position, Bytes)> {
    let rest = payload.strip_prefix(MARKER)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let offset = parse_u64(&rest[..space])?;
    let rest = &rest[space + 1..];
    let space = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..space]).ok()?;
    let start = payload.len() - (rest.len() - space - 1);
    Some((Position::new(offset, epoch), payload.slice(start..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positioned_messages_split_and_others_do_not() {
        let message = Bytes::from_static(b"\xC1\x00cw:42 18f3-0 \x01payload bytes");
        let (position, payload) = split_positioned(&message).expect("positioned");
        assert_eq!(position, Position::new(42, "18f3-0"));
        assert_eq!(&payload[..], b"\x01payload bytes");
        for other in [
            &b"\x01envelope"[..],
            b"\xC1",
            b"\xC142 e p",
            b"\xC1\x00cw:x y z",
            b"\xC1\x00cw:42",
            b"\xC1\x00cw:42 e",
            b"",
        ] {
            assert!(split_positioned(&Bytes::copy_from_slice(other)).is_none());
        }
        let (_, empty) = split_positioned(&Bytes::from_static(b"\xC1\x00cw:1 e ")).expect("empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn any_bytes_after_the_marker_split_or_not_without_panicking() {
        // A fixed-seed xorshift: inputs of digits, spaces and other bytes after the marker.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut split = 0;
        for _ in 0..50_000 {
            let len = (next() % 40) as usize;
            let mut input = MARKER.to_vec();
            for _ in 0..len {
                input.push(match next() % 5 {
                    0 => b' ',
                    1 | 2 => b'0' + (next() % 10) as u8,
                    3 => b'e',
                    _ => next() as u8,
                });
            }
            let input = Bytes::from(input);
            if let Some((position, payload)) = split_positioned(&input) {
                split += 1;
                assert!(input.ends_with(&payload));
                let head = format!("{} {} ", position.offset, position.epoch);
                assert!(head.len() + MARKER.len() + payload.len() <= input.len());
            }
        }
        assert!(split > 1_000, "the inputs reach the split: {split}");
    }

    #[test]
    fn reads_are_complete_only_without_a_gap() {
        let b = |s: &str| s.as_bytes().to_vec();
        let read = parse_read(
            vec![b("e"), b("5"), b("4"), b("x"), b("5"), b("y")],
            Some(3),
        );
        let read = read.expect("parsed");
        assert!(read.complete);
        assert_eq!(read.entries.len(), 2);
        let gap = parse_read(vec![b("e"), b("5"), b("5"), b("y")], Some(3)).expect("parsed");
        assert!(!gap.complete, "offset 4 is missing");
        let caught_up = parse_read(vec![b("e"), b("5")], Some(5)).expect("parsed");
        assert!(caught_up.complete);
        let ahead = parse_read(vec![b("e"), b("5")], Some(7)).expect("parsed");
        assert!(!ahead.complete);
        let fresh = parse_read(vec![b("e"), b("0")], None).expect("parsed");
        assert!(!fresh.complete && fresh.top == 0);
        assert!(parse_read(vec![b("e")], None).is_none());
    }
}

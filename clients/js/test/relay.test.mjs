// The client against a real `crosswire serve` (the relay contract of SPEC §4): connection,
// requests and replies, timeouts and the pending hook, heartbeat and latency, server closes,
// manual close, listeners. Process-level scenarios (kill, freeze) are in lifecycle.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocketConnector from '../dist/crosswire.mjs';
import { Relay, WebSocketImpl, STEP, next, record, within } from './helpers.mjs';

let relay;
const clients = [];

before(async () => {
  relay = await Relay.start();
});

after(async () => {
  for (const c of clients) c.manualClose();
  await relay.kill();
});

let serial = 0;
/** A client bound to a fresh id (unless `id` is null), open. */
async function connect(options = {}, { open = true } = {}) {
  const id = options.id === undefined ? `js-${process.pid}-${++serial}` : options.id;
  delete options.id;
  const client = new WebSocketConnector({
    url: relay.url,
    WebSocket: WebSocketImpl,
    customParams: id === null ? undefined : { id },
    ...options,
  });
  client.id = id;
  clients.push(client);
  if (open) await next(client, 'open');
  return client;
}

/** A promise callback in the seed's (err, data) style. */
function emitCb(client, event, data, options) {
  return new Promise((resolve) => client.emit(event, data, (err, reply) => resolve({ err, reply }), options));
}

test('open, custom params in the URL, unicast to our own id', async () => {
  const client = await connect({ customParams: { id: `js-params-${process.pid}`, name: 'Sam Smith', token: 'a&b' } });
  assert.equal(client.url, `${relay.url}?id=js-params-${process.pid}&name=Sam%20Smith&token=a%26b`);
  assert.ok(client.isOpen());
  assert.equal(client.reconnecting(), false);
  // The relay bound the socket to the id from the query: `to` our id reaches us.
  const msg = next(client, 'msg');
  const reply = await client.emitWithPromise('to', { id: `js-params-${process.pid}`, data: { hello: 'me' } });
  assert.deepEqual(reply, { success: true, data: { ok: true } });
  assert.deepEqual(await msg, { hello: 'me' });
});

test('emit with a callback gets the reply; emitWithPromise resolves { success, data }', async () => {
  const client = await connect();
  const { err, reply } = await emitCb(client, 'echo', { n: 1, s: 'ü' });
  assert.equal(err, null);
  assert.deepEqual(reply, { n: 1, s: 'ü' });
  assert.deepEqual(await client.emitWithPromise('echo', [1, 'two', null]), { success: true, data: [1, 'two', null] });
  assert.deepEqual(await client.emitWithPromise('echo'), { success: true, data: null });
  // Rooms through the relay, fire-and-forget emit.
  const other = await connect();
  assert.deepEqual((await client.emitWithPromise('join', { room: 'r1' })).data, { ok: true });
  const got = next(client, 'msg');
  assert.equal(other.emit('room', { room: 'r1', data: 'to the room' }), true);
  assert.equal(await got, 'to the room');
  // A fast reply never fires the pending hook.
  let pending = 0;
  const fast = await client.emitWithPromise('echo', 1, { onPending: () => pending++, pendingTimeout: 1000 });
  assert.equal(fast.success, true);
  assert.equal(pending, 0);
});

test('CALLBACK_TIMEOUT for an event the relay ignores; onPending fires first', async () => {
  const client = await connect({ callbackTimeout: 400, pendingTimeout: 50 });
  const order = [];
  const started = Date.now();
  const { err, reply } = await emitCb(client, 'no-such-event', { x: 1 }, { onPending: () => order.push('pending') });
  order.push('callback');
  const waited = Date.now() - started;
  assert.equal(reply, null);
  assert.equal(err.errorCode, 'CALLBACK_TIMEOUT');
  assert.match(err.error, /no-such-event/);
  assert.ok(err instanceof Error);
  assert.deepEqual(order, ['pending', 'callback']);
  assert.ok(waited >= 390 && waited < 400 + STEP, `waited ${waited} ms`);

  // Per-call options override the defaults.
  let pendingCalls = 0;
  const t0 = Date.now();
  const result = await client.emitWithPromise('no-such-event', 1, {
    callbackTimeout: 150,
    pendingTimeout: 30,
    onPending: () => pendingCalls++,
  });
  assert.equal(result.success, false);
  assert.equal(result.errorCode, 'CALLBACK_TIMEOUT');
  assert.equal(typeof result.error, 'string');
  assert.equal(pendingCalls, 1);
  assert.ok(Date.now() - t0 >= 140);
  // A pendingTimeout not below the callbackTimeout never fires the hook (as in the seed).
  let never = 0;
  await client.emitWithPromise('no-such-event', 1, { callbackTimeout: 100, pendingTimeout: 200, onPending: () => never++ });
  assert.equal(never, 0);
  // The connection is still fine.
  assert.equal((await client.emitWithPromise('echo', 'still here')).data, 'still here');
});

test('WS_NOT_OPEN before the connection opens and after manualClose', async () => {
  const client = await connect({}, { open: false });
  let sync = null;
  client.emit('echo', 1, (err) => (sync = err));
  assert.equal(sync.errorCode, 'WS_NOT_OPEN', 'the callback runs before emit returns');
  assert.equal(sync.error, 'WebSocket is not open');
  assert.deepEqual(await client.emitWithPromise('echo', 1), {
    success: false,
    error: 'WebSocket is not open',
    errorCode: 'WS_NOT_OPEN',
  });
  assert.equal(client.emit('echo', 1), false);
  await next(client, 'open');
  assert.equal((await client.emitWithPromise('echo', 1)).success, true);
  client.manualClose();
  assert.equal((await client.emitWithPromise('echo', 1)).errorCode, 'WS_NOT_OPEN');
  assert.equal(client.emit('echo', 1), false);
});

test('heartbeat: ping, pong with the latency, setPingInterval / getPingInterval', async () => {
  const client = await connect({ pingInterval: 100, pongTimeout: 1000 });
  const log = record(client);
  const raw = [];
  client.on('message', (d) => raw.push(d));
  const latency = await next(client, 'pong');
  assert.equal(typeof latency, 'number');
  assert.ok(latency >= 0 && latency < 1000, `latency ${latency}`);
  assert.deepEqual(log.names().slice(0, 2), ['ping', 'pong']);
  assert.ok(raw.includes(''), 'the echo is also reported raw');
  assert.equal(client.getPingInterval(), 100);

  // A long interval with `immediate`: a ping goes out now, the next one much later.
  client.setPingInterval(60000, true);
  assert.equal(client.getPingInterval(), 60000);
  assert.equal(log.names().at(-1), 'ping');
  await next(client, 'pong');
  // Off: no more pings.
  client.setPingInterval(0);
  assert.equal(client.getPingInterval(), 0);
  assert.throws(() => client.setPingInterval(-1), TypeError);
  assert.throws(() => client.setPingInterval('5'), TypeError);
  const pings = log.names().filter((n) => n === 'ping').length;
  client.setPingInterval(20);
  await next(client, 'pong');
  assert.ok(log.names().filter((n) => n === 'ping').length > pings);
  client.setPingInterval(0);
});

test('a close from the server is reported and not reconnected', async () => {
  // The relay closes a socket without an `id` with 4011.
  const client = await connect({ id: null, fastReconnectInterval: 20 }, { open: false });
  const log = record(client);
  const close = await next(client, 'close');
  assert.equal(close.code, 4011);
  assert.equal(typeof close.reason, 'string');
  // Ten times the reconnect interval: nothing was scheduled.
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(log.names().filter((n) => n !== 'open'), ['close']);
  assert.equal(client.reconnecting(), false);
  // The application decides: reconnect() by hand.
  client.reconnect();
  assert.equal(client.reconnecting(), true);
  assert.deepEqual(log.at(-1).slice(0, 2), ['reconnect', { repeat: 1, timeout: 20 }]);
  assert.equal((await next(client, 'close')).code, 4011);
});

test('reconnect() on an open connection closes (1000) and reconnects; the count restarts at open', async () => {
  const client = await connect({ fastReconnectInterval: 30 });
  const log = record(client);
  const opened = next(client, 'open');
  client.reconnect();
  assert.deepEqual(log.map((e) => e.slice(0, 2)), [
    ['close', { code: 1000, reason: 'reconnect' }],
    ['reconnect', { repeat: 1, timeout: 30 }],
  ]);
  assert.equal(client.reconnecting(), true);
  await opened;
  assert.equal(client.reconnecting(), false);
  assert.equal((await client.emitWithPromise('echo', 'again')).data, 'again');
  client.reconnect();
  assert.deepEqual(log.at(-1).slice(0, 2), ['reconnect', { repeat: 1, timeout: 30 }]);
  await next(client, 'open');
});

test('manualClose: close 4001, no reconnect, timers released', async () => {
  const client = await connect({ pingInterval: 50, fastReconnectInterval: 20 });
  const watcher = await connect();
  const log = record(client);
  await next(client, 'pong');
  client.manualClose();
  assert.deepEqual(log.at(-1).slice(0, 2), ['close', { code: 4001, reason: 'manual close' }]);
  assert.equal(client.reconnecting(), false);
  assert.equal(client.ws, null);
  client.manualClose(); // idempotent
  client.reconnect(); // ignored after manualClose
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(log.names().filter((n) => n !== 'ping' && n !== 'pong').slice(-1), ['close']);
  assert.ok(!log.slice(log.findIndex((e) => e[0] === 'close')).some((e) => e[0] !== 'close'), 'nothing after close');
  assert.equal(client._pingTimer, null);
  assert.equal(client._pongTimer, null);
  assert.equal(client._reconnectTimer, null);
  // The server dropped the binding: a unicast to the closed id reaches nobody, but is accepted.
  assert.deepEqual((await watcher.emitWithPromise('to', { id: client.id, data: 1 })).data, { ok: true });
});

test('listeners on server events: on, once, off by function and by tag, offTag', async () => {
  const client = await connect();
  const seen = [];
  const plain = (d) => seen.push(`plain:${d}`);
  client.on('msg', plain);
  client.on('msg', (d) => seen.push(`tagged:${d}`), 'ui');
  client.once('msg', (d) => seen.push(`once:${d}`), 'ui');
  const send = async (data) => {
    const arrived = next(client, 'msg', STEP, (d) => d === data);
    await client.emitWithPromise('to', { id: client.id, data });
    await arrived;
  };
  await send(1);
  await send(2);
  client.off('msg', plain);
  await send(3);
  client.offTag('ui');
  await send(4);
  client.on('msg', (d) => seen.push(`again:${d}`), 'ui');
  client.off('msg', 'ui');
  await send(5);
  assert.deepEqual(seen, ['plain:1', 'tagged:1', 'once:1', 'plain:2', 'tagged:2', 'tagged:3']);
});

test('many concurrent requests are matched to their replies', async () => {
  const client = await connect();
  const results = await within(
    Promise.all(Array.from({ length: 200 }, (_, i) => client.emitWithPromise('echo', { i }))),
    STEP,
    '200 replies'
  );
  results.forEach((r, i) => assert.deepEqual(r, { success: true, data: { i } }));
});

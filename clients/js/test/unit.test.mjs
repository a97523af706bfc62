// Unit tests: delay maths, URL building, options, listeners, the bundles and their size.
// The connection behaviour is tested against a scripted fake socket here and against a real
// `crosswire serve` in relay.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import vm from 'node:vm';
import WebSocketConnector, { WebSocketConnector as Named, reconnectDelay, buildUrl } from '../dist/crosswire.mjs';
import { root } from './helpers.mjs';

const require = createRequire(import.meta.url);

/** A scripted stand-in for WebSocket: the test plays the server. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(text);
  }
  close(code, reason) {
    this.closed = { code, reason };
    this.readyState = 3;
  }
  // server side
  open() {
    this.readyState = 1;
    this.onopen({ type: 'open' });
  }
  receive(text) {
    this.onmessage({ data: text });
  }
  serverClose(code, reason) {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
  fail() {
    this.readyState = 3;
    this.onerror({ type: 'error' });
    this.onclose({ code: 1006, reason: '' });
  }
}

function fake(options = {}) {
  return new WebSocketConnector({ url: 'ws://fake.test/app', WebSocket: FakeSocket, pingInterval: 0, ...options });
}

test('reconnect delay: fast attempts, exponential growth with jitter, cap, floor', () => {
  const fast = 3000;
  const max = 120000;
  for (const attempt of [0, 1, 2, 3]) assert.equal(reconnectDelay(attempt, 3, fast, max, 999), fast);
  assert.equal(reconnectDelay(4, 3, fast, max, 0), 6000);
  assert.equal(reconnectDelay(4, 3, fast, max, 2999), 8999);
  assert.equal(reconnectDelay(5, 3, fast, max, 500), 12500);
  assert.equal(reconnectDelay(7, 3, fast, max, 0), 48000);
  assert.equal(reconnectDelay(8, 3, fast, max, 0), 96000);
  assert.equal(reconnectDelay(9, 3, fast, max, 0), max);
  assert.equal(reconnectDelay(10, 0, 100, 1000, 50), 1000);
  // A maximum below the fast interval still waits the fast interval.
  assert.equal(reconnectDelay(10, 0, 100, 10, 0), 100);
  // Huge attempt numbers saturate at the maximum.
  assert.equal(reconnectDelay(5000, 0, 100, 5000, 99), 5000);
  // Threshold 0 grows from the first attempt; fractional jitter is floored.
  assert.equal(reconnectDelay(1, 0, 50, 10000, 0), 100);
  assert.equal(reconnectDelay(2, 0, 50, 10000, 0.7), 200);
});

test('custom params are merged into the query, URL-encoded', () => {
  assert.equal(buildUrl('ws://h/p', null), 'ws://h/p');
  assert.equal(buildUrl('ws://h/p', {}), 'ws://h/p');
  assert.equal(
    buildUrl('ws://host:9000/room?v=1&id=0', { id: 7, name: 'Sam Smith' }),
    'ws://host:9000/room?v=1&id=7&name=Sam%20Smith'
  );
  assert.equal(buildUrl('wss://h/p', { token: 'a&b=c', ü: 'é' }), 'wss://h/p?token=a%26b%3Dc&%C3%BC=%C3%A9');
  assert.equal(buildUrl('ws://h/p?x=1#frag', { y: true, skip: null, gone: undefined }), 'ws://h/p?x=1&y=true#frag');
  const client = fake({ customParams: { id: 'me', name: 'Sam' } });
  assert.equal(client.url, 'ws://fake.test/app?id=me&name=Sam');
  assert.equal(FakeSocket.last().url, client.url);
  client.manualClose();
});

test('a missing WebSocket implementation is a clear error', () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(
      () => new WebSocketConnector({ url: 'ws://127.0.0.1:1' }),
      (e) => e instanceof TypeError && /no WebSocket implementation/.test(e.message) && /`WebSocket` option/.test(e.message)
    );
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
  // A global WebSocket is used when there is one.
  globalThis.WebSocket = FakeSocket;
  try {
    const client = new WebSocketConnector({ url: 'ws://global.test' });
    assert.equal(FakeSocket.last().url, 'ws://global.test');
    client.manualClose();
  } finally {
    if (saved) globalThis.WebSocket = saved;
    else delete globalThis.WebSocket;
  }
});

test('the URL must be ws:// or wss://', () => {
  for (const url of [undefined, '', 'http://h', 'h:9000']) {
    assert.throws(() => new WebSocketConnector({ url, WebSocket: FakeSocket }), TypeError);
  }
});

test('defaults are the seed client\'s; the seed option names are accepted', () => {
  const client = new WebSocketConnector({ url: 'ws://h', WebSocket: FakeSocket });
  const o = client.options;
  assert.equal(o.pingInterval, 10000);
  assert.equal(o.pongTimeout, 2000);
  assert.equal(o.pingMessage, '');
  assert.equal(o.fastReconnectThreshold, 3);
  assert.equal(o.fastReconnectInterval, 3000);
  assert.equal(o.maxReconnectInterval, 120000);
  assert.equal(o.repeatLimit, Infinity);
  assert.equal(o.callbackTimeout, 5000);
  assert.equal(o.pendingTimeout, 100);
  assert.equal(client.getPingInterval(), 10000);
  client.manualClose();
  const seed = new WebSocketConnector({
    url: 'ws://h',
    WebSocket: FakeSocket,
    pingMsg: 'hb',
    reconnectMaxInterval: 9000,
    repeatLimit: null,
  });
  assert.equal(seed.options.pingMessage, 'hb');
  assert.equal(seed.options.maxReconnectInterval, 9000);
  assert.equal(seed.options.repeatLimit, Infinity);
  seed.manualClose();
  assert.equal(WebSocketConnector, Named);
});

test('on, once, off by function, by tag, by event, offTag', () => {
  const client = fake();
  const sock = FakeSocket.last();
  sock.open();
  const seen = [];
  const a = (d) => seen.push(['a', d]);
  const b = (d) => seen.push(['b', d]);
  client.on('news', a);
  client.on('news', b, 'screen');
  client.once('news', (d) => seen.push(['once', d]));
  client.on('other', (d) => seen.push(['other', d]), 'screen');
  client.on('other', (d) => seen.push(['other2', d]), 7);
  const say = (event, payload) => sock.receive(JSON.stringify({ event, payload }));

  say('news', 1);
  say('news', 2);
  assert.deepEqual(seen.splice(0), [['a', 1], ['b', 1], ['once', 1], ['a', 2], ['b', 2]]);

  client.off('news', a); // by function
  say('news', 3);
  assert.deepEqual(seen.splice(0), [['b', 3]]);

  client.off('news', 'screen'); // by tag, on one event
  say('news', 4);
  say('other', 5);
  assert.deepEqual(seen.splice(0), [['other', 5], ['other2', 5]]);
  assert.equal(client.listenerCount('news'), 0);

  client.offTag('screen'); // by tag, every event
  say('other', 6);
  assert.deepEqual(seen.splice(0), [['other2', 6]]);
  client.off('other', 7); // numeric tag
  say('other', 7);
  assert.deepEqual(seen.splice(0), []);

  client.on('x', a).on('x', b);
  client.off('x'); // every listener of the event
  say('x', 8);
  client.on('y', a);
  client.off(); // everything
  say('y', 9);
  assert.deepEqual(seen, []);

  // A throwing listener does not stop the others; a once listener is removed even if it throws.
  const errors = [];
  const origError = console.error;
  console.error = (...args) => errors.push(args);
  try {
    client.once('z', () => {
      throw new Error('boom');
    });
    client.on('z', (d) => seen.push(['z', d]));
    say('z', 1);
    say('z', 2);
  } finally {
    console.error = origError;
  }
  assert.deepEqual(seen.splice(0), [['z', 1], ['z', 2]]);
  assert.equal(errors.length, 1);

  assert.throws(() => client.on('', a), TypeError);
  assert.throws(() => client.on('e', 'nope'), TypeError);
  client.manualClose();
});

test('frames: events carry the payload, replies settle requests, garbage is ignored', async () => {
  const client = fake();
  const sock = FakeSocket.last();
  const raw = [];
  client.on('message', (d) => raw.push(d));
  sock.open();
  client.emit('plain', { a: 1 });
  client.emit('nopayload');
  assert.deepEqual(sock.sent.map((t) => JSON.parse(t)), [
    { event: 'plain', payload: { a: 1 } },
    { event: 'nopayload', payload: null },
  ]);
  const reply = client.emitWithPromise('ask', [1, 2]);
  const asked = JSON.parse(sock.sent[2]);
  assert.equal(asked.event, 'ask');
  assert.deepEqual(asked.payload, [1, 2]);
  assert.ok(typeof asked.callbackId === 'string' && asked.callbackId.length >= 1 && asked.callbackId.length <= 64);
  for (const junk of ['not json', '42', 'null', '{"payload":1}', '{"callbackId":"unknown","payload":1}']) sock.receive(junk);
  sock.receive(JSON.stringify({ callbackId: asked.callbackId, payload: { ok: true } }));
  assert.deepEqual(await reply, { success: true, data: { ok: true } });
  assert.equal(raw.length, 6); // every frame is reported raw
  // A reply without payload is null; a duplicate reply is ignored.
  const second = client.emitWithPromise('ask');
  const id = JSON.parse(sock.sent[3]).callbackId;
  sock.receive(JSON.stringify({ callbackId: id }));
  sock.receive(JSON.stringify({ callbackId: id, payload: 'late' }));
  assert.deepEqual(await second, { success: true, data: null });
  // Unserialisable data fails without sending.
  const cyclic = {};
  cyclic.self = cyclic;
  const bad = await client.emitWithPromise('ask', cyclic);
  assert.equal(bad.success, false);
  assert.equal(bad.errorCode, 'ENCODE_ERROR');
  const invalid = await client.emitWithPromise('', 1);
  assert.equal(invalid.errorCode, 'INVALID_ARGUMENT');
  assert.equal(sock.sent.length, 4);
  // manualClose answers waiting requests with WS_NOT_OPEN.
  const waiting = client.emitWithPromise('ask', 1);
  client.manualClose();
  const closed = await waiting;
  assert.equal(closed.success, false);
  assert.equal(closed.errorCode, 'WS_NOT_OPEN');
  assert.deepEqual(sock.closed, { code: 4001, reason: 'manual close' });
});

test('fake socket: server close does not reconnect, an error does, reconnect() cycles an open socket', () => {
  const client = fake({ fastReconnectInterval: 60000 });
  const log = [];
  for (const name of ['open', 'close', 'error', 'reconnect', 'repeat-limit']) client.on(name, (a) => log.push([name, a]));
  FakeSocket.last().open();
  FakeSocket.last().serverClose(4010, 'forced logout');
  assert.deepEqual(log.splice(0), [['open', { type: 'open' }], ['close', { code: 4010, reason: 'forced logout' }]]);
  assert.equal(client.reconnecting(), false);

  client.reconnect();
  assert.deepEqual(log.splice(0), [['reconnect', { repeat: 1, timeout: 60000 }]]);
  assert.equal(client.reconnecting(), true);
  client.reconnect(); // already scheduled: nothing new
  client.reconnect(true); // only resets the count
  assert.deepEqual(log.splice(0), []);
  client.manualClose();
  assert.equal(client.reconnecting(), false);
  client.reconnect();
  assert.deepEqual(log.splice(0), []);

  const other = fake({ fastReconnectInterval: 60000, repeatLimit: 1 });
  const events = [];
  for (const name of ['close', 'error', 'reconnect', 'repeat-limit']) other.on(name, (a) => events.push(name));
  FakeSocket.last().open();
  FakeSocket.last().fail();
  assert.deepEqual(events.splice(0), ['error', 'close', 'reconnect']);
  other.manualClose();

  const cycle = fake({ fastReconnectInterval: 60000 });
  const sock = FakeSocket.last();
  sock.open();
  const closes = [];
  cycle.on('close', (c) => closes.push(c));
  cycle.reconnect();
  assert.deepEqual(sock.closed, { code: 1000, reason: 'reconnect' });
  assert.deepEqual(closes, [{ code: 1000, reason: 'reconnect' }]);
  assert.equal(cycle.reconnecting(), true);
  cycle.manualClose();
});

test('bundles: ESM, CommonJS and the <script> build expose the same API', () => {
  const cjs = require('../dist/crosswire.cjs');
  assert.equal(typeof cjs, 'function');
  assert.equal(cjs.name, 'WebSocketConnector');
  assert.equal(cjs.WebSocketConnector, cjs);
  assert.equal(cjs.default, cjs);
  assert.equal(cjs.reconnectDelay(4, 3, 3000, 120000, 0), 6000);
  const viaExports = require('crosswire-client');
  assert.equal(viaExports, cjs);

  const script = readFileSync(join(root, 'dist/crosswire.min.js'), 'utf8');
  const windowLike = { console, setTimeout, clearTimeout, setInterval, clearInterval };
  vm.createContext(windowLike);
  vm.runInContext(script, windowLike);
  assert.equal(typeof windowLike.WebSocketConnector, 'function');
  assert.equal(windowLike.crosswire.WebSocketConnector, windowLike.WebSocketConnector);
  assert.equal(windowLike.crosswire.default, windowLike.WebSocketConnector);
  // The <script> build finds the page's global WebSocket.
  windowLike.WebSocket = FakeSocket;
  vm.runInContext('var c = new WebSocketConnector({ url: "ws://page.test", customParams: { id: 1 } }); c.manualClose();', windowLike);
  assert.equal(FakeSocket.last().url, 'ws://page.test?id=1');

  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.exports['.'].import, './dist/crosswire.mjs');
  assert.equal(pkg.exports['.'].require, './dist/crosswire.cjs');
  assert.equal(pkg.exports['.'].types, './index.d.ts');
  assert.deepEqual(pkg.dependencies, undefined, 'the client has no runtime dependencies');
});

test('size budget: crosswire.min.js is at most 5 KB minified and gzipped', () => {
  const min = readFileSync(join(root, 'dist/crosswire.min.js'));
  const gzipped = gzipSync(min, { level: 9 }).length;
  console.log(`# crosswire.min.js: ${min.length} bytes minified, ${gzipped} bytes gzipped (budget 5120)`);
  assert.ok(gzipped <= 5120, `crosswire.min.js is ${gzipped} bytes gzipped, over the 5120-byte budget`);
});

test('listeners may close or reconnect from inside any event', () => {
  const client = fake({ pingInterval: 1000, fastReconnectInterval: 60000 });
  client.on('open', () => client.manualClose());
  FakeSocket.last().open();
  assert.equal(client._pingTimer, null, 'no heartbeat after a manualClose from open');
  assert.deepEqual(FakeSocket.last().closed, { code: 4001, reason: 'manual close' });

  // The seed's pattern: reconnect() from the close listener; one attempt is scheduled.
  const seedStyle = fake({ fastReconnectInterval: 60000 });
  const reconnects = [];
  seedStyle.on('close', (e) => (e.code === 4001 ? seedStyle.manualClose() : seedStyle.reconnect()));
  seedStyle.on('reconnect', (r) => reconnects.push(r));
  FakeSocket.last().open();
  FakeSocket.last().fail();
  assert.deepEqual(reconnects, [{ repeat: 1, timeout: 60000 }]);
  seedStyle.manualClose();

  const fromError = fake({ fastReconnectInterval: 60000 });
  fromError.on('error', () => fromError.manualClose());
  const closes = [];
  fromError.on('reconnect', () => closes.push('reconnect'));
  FakeSocket.last().fail();
  assert.deepEqual(closes, []);
  assert.equal(fromError.reconnecting(), false);
});

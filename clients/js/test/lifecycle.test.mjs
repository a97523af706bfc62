// The client against a real `crosswire serve` that dies, comes back, or freezes: the
// reconnect schedule, the repeat limit, the heartbeat timeout (close 4002).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocketConnector from '../dist/crosswire.mjs';
import { Relay, WebSocketImpl, STEP, collect, next, record } from './helpers.mjs';

function client(relay, id, options) {
  return new WebSocketConnector({ url: relay.url, WebSocket: WebSocketImpl, customParams: { id }, ...options });
}

/** `to` our own id arrives: the relay knows us on this connection. */
async function checkUnicast(c, id, data) {
  const arrived = next(c, 'msg', STEP, (d) => d === data);
  assert.deepEqual(await c.emitWithPromise('to', { id, data }), { success: true, data: { ok: true } });
  assert.equal(await arrived, data);
}

test('reconnect schedule against a killed and restarted server', async (t) => {
  let relay = await Relay.start();
  const port = relay.port;
  const c = client(relay, 'me', {
    fastReconnectInterval: 200,
    fastReconnectThreshold: 2,
    maxReconnectInterval: 1000,
    connectTimeout: 1000,
    pingInterval: 0,
  });
  t.after(async () => {
    c.manualClose();
    await relay.kill();
  });
  const log = record(c);
  await next(c, 'open');
  await checkUnicast(c, 'me', 'before');

  // The server dies without closing anything: error, close 1006, reconnect attempts.
  const closed = next(c, 'close');
  const errored = next(c, 'error');
  const reconnects = collect(c, 'reconnect');
  await relay.kill();
  await errored;
  assert.equal((await closed).code, 1006);

  // Attempts 1-2 wait the fast interval; then 2^(n-2) * 200 ms + jitter(0..200), capped at 1 s.
  for (let n = 1; n <= 5; n++) {
    await reconnects.nth(n, 3000);
    assert.equal(c.reconnecting(), true);
  }
  const schedule = reconnects.slice(0, 5);
  assert.deepEqual(schedule.map(([i]) => i.repeat), [1, 2, 3, 4, 5]);
  const timeouts = schedule.map(([i]) => i.timeout);
  assert.equal(timeouts[0], 200, String(timeouts));
  assert.equal(timeouts[1], 200, String(timeouts));
  assert.ok(timeouts[2] >= 400 && timeouts[2] < 600, String(timeouts));
  assert.ok(timeouts[3] >= 800 && timeouts[3] <= 1000, String(timeouts));
  assert.equal(timeouts[4], 1000, String(timeouts));
  assert.ok(timeouts.every(Number.isInteger));
  // Each attempt really waited its delay before failing and scheduling the next one.
  for (let i = 0; i + 1 < schedule.length; i++) {
    const gap = schedule[i + 1][1] - schedule[i][1];
    assert.ok(gap + 50 >= timeouts[i] && gap < timeouts[i] + STEP, `attempt ${i + 1} waited ${gap} ms, scheduled ${timeouts[i]}`);
  }
  // Between attempts: error events only (a failed connect is not a close).
  const afterKill = log.slice(log.findIndex((e) => e[0] === 'close') + 1).map((e) => e[0]);
  assert.ok(afterKill.every((n) => n === 'error' || n === 'reconnect'), afterKill.join());

  // The server comes back on the same port: the next attempt opens, the count restarts.
  relay = await Relay.start(port);
  const lateRepeats = [];
  const track = (info) => lateRepeats.push(info.repeat);
  c.on('reconnect', track);
  await next(c, 'open', 5000);
  c.off('reconnect', track);
  assert.ok(lateRepeats.every((r) => r >= 6), `count restarted before open: ${lateRepeats}`);
  assert.equal(c.isOpen(), true);
  assert.equal(c.reconnecting(), false);
  await checkUnicast(c, 'me', 'after restart');

  // The attempt count restarted at the open.
  const again = next(c, 'reconnect');
  await relay.kill();
  assert.deepEqual(await again, { repeat: 1, timeout: 200 });
});

test('repeat-limit: the attempts stop at the limit; reconnect(true) starts over', async (t) => {
  const relay = await Relay.start();
  const c = client(relay, 'limited', { fastReconnectInterval: 50, repeatLimit: 2, pingInterval: 0 });
  t.after(async () => {
    c.manualClose();
    await relay.kill();
  });
  const log = record(c);
  await next(c, 'open');
  const limit = next(c, 'repeat-limit');
  await relay.kill();
  assert.equal(await limit, 2);
  assert.deepEqual(
    log.filter((e) => e[0] === 'reconnect').map((e) => e[1]),
    [
      { repeat: 1, timeout: 50 },
      { repeat: 2, timeout: 50 },
    ]
  );
  assert.deepEqual(log.map((e) => e[0]), [
    'open',
    'error',
    'close',
    'reconnect',
    'error',
    'reconnect',
    'error',
    'repeat-limit',
  ]);
  assert.equal(c.reconnecting(), false);
  // Nothing more happens by itself: ten times the interval later, still the same log.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(log.length, 8);
  // By hand, without resetting, the limit is still reached.
  const limitAgain = next(c, 'repeat-limit');
  c.reconnect();
  assert.equal(await limitAgain, 2);
  // With resetCount the attempts start over.
  const first = next(c, 'reconnect');
  c.reconnect(true);
  assert.deepEqual(await first, { repeat: 1, timeout: 50 });
  assert.equal(c.reconnecting(), true);
  await next(c, 'repeat-limit');
});

test('heartbeat timeout against a frozen server: pong-timeout, close 4002, reconnect', async (t) => {
  const relay = await Relay.start();
  const c = client(relay, 'frozen', {
    pingInterval: 150,
    pongTimeout: 300,
    fastReconnectInterval: 200,
    connectTimeout: 400,
  });
  t.after(async () => {
    c.manualClose();
    relay.thaw();
    await relay.kill();
  });
  const log = record(c);
  await next(c, 'open');
  await next(c, 'pong');

  // SIGSTOP: the kernel still accepts bytes, nobody answers.
  const timedOut = next(c, 'pong-timeout');
  const closed = next(c, 'close');
  const reconnecting = next(c, 'reconnect');
  relay.freeze();
  await timedOut;
  assert.deepEqual(await closed, { code: 4002, reason: 'heartbeat timeout' });
  assert.deepEqual(await reconnecting, { repeat: 1, timeout: 200 });
  const i = log.findIndex((e) => e[0] === 'pong-timeout');
  assert.deepEqual(log.slice(i, i + 3).map((e) => e[0]), ['pong-timeout', 'close', 'reconnect']);
  // The pong deadline held: the first ping after the last pong went out pongTimeout before.
  const lastPong = log.slice(0, i).map((e) => e[0]).lastIndexOf('pong');
  const unanswered = log.slice(lastPong, i).find((e) => e[0] === 'ping');
  const waited = log[i][2] - unanswered[2];
  assert.ok(waited >= 290, `pong-timeout ${waited} ms after a ping`);

  // While frozen, connection attempts hang until connectTimeout: errors, more attempts.
  await next(c, 'error', 3000);
  await next(c, 'reconnect', 3000);

  // The server thaws: the client reconnects and the heartbeat works again.
  relay.thaw();
  await next(c, 'open', 5000);
  assert.equal(typeof (await next(c, 'pong')), 'number');
  await checkUnicast(c, 'frozen', 'thawed');
});

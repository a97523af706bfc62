// Recovery against a real `crosswire serve --history`: a client whose connection breaks
// re-joins its rooms by itself with the last position it saw, gets every message sent while
// it was away, in order and once, and learns `recovered: true`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocketConnector from '../dist/crosswire.mjs';
import { Relay, WebSocketImpl, STEP, next, within } from './helpers.mjs';

let relay;
const clients = [];

before(async () => {
  relay = await Relay.start(0, ['--history']);
});

after(async () => {
  for (const c of clients) c.manualClose();
  await relay.kill();
});

/** Resolves once `done()` holds (polled every 10 ms), failing after STEP. */
function until(done, what) {
  return within(
    (async () => {
      while (!done()) await new Promise((r) => setTimeout(r, 10));
    })(),
    STEP,
    what
  );
}

function connect(id) {
  const client = new WebSocketConnector({
    url: relay.url,
    WebSocket: WebSocketImpl,
    customParams: { id },
    fastReconnectInterval: 200,
  });
  clients.push(client);
  return client;
}

test('a broken connection re-joins with its position and recovers what it missed', async () => {
  const reader = connect(`reader-${process.pid}`);
  const writer = connect(`writer-${process.pid}`);
  await Promise.all([next(reader, 'open'), next(writer, 'open')]);
  const got = [];
  reader.on('msg', (n, position) => got.push({ n, position }));
  const joined = await reader.join('r');
  assert.equal(joined.ok, true);
  assert.equal(joined.stream, 'relay/r');
  assert.equal(joined.recovered, false);
  const send = async (from, to) => {
    for (let n = from; n <= to; n++) await writer.emitWithPromise('room', { room: 'r', data: n });
  };
  await send(1, 50);
  await until(() => !(got.length < 50), 'the first 50 messages');
  // The network goes: no close frame, the client finds out and reconnects with backoff.
  const rejoin = next(reader, 'rejoin', 3 * STEP);
  reader.ws.terminate();
  await send(51, 100);
  const back = await rejoin;
  assert.equal(back.room, 'r');
  assert.equal(back.recovered, true, JSON.stringify(back));
  await send(101, 101);
  await until(() => !(got.length < 101), 'every message');
  assert.deepEqual(
    got.map((g) => g.n),
    Array.from({ length: 101 }, (_, i) => i + 1),
    'every message once, in order'
  );
  const offsets = got.map((g) => g.position.offset);
  for (let i = 1; i < offsets.length; i++) assert.equal(offsets[i], offsets[i - 1] + 1);
  assert.deepEqual(reader.position('r'), { offset: got[100].position.offset, epoch: got[100].position.epoch });
});

test('what is sent to the id while the connection is broken arrives after the reconnect', async () => {
  const id = `direct-${process.pid}`;
  const reader = connect(id);
  const writer = connect(`direct-writer-${process.pid}`);
  // The first connection's report: where the id's stream is.
  const first = next(reader, 'recovered');
  await Promise.all([next(reader, 'open'), next(writer, 'open')]);
  assert.equal((await first).stream, `@${id}`);
  const got = [];
  reader.on('msg', (n) => got.push(n));
  const send = async (from, to) => {
    for (let n = from; n <= to; n++) await writer.emitWithPromise('to', { id, data: n });
  };
  await send(1, 20);
  await until(() => !(got.length < 20), 'the first 20 messages');
  const back = next(reader, 'recovered', 3 * STEP);
  reader.ws.terminate();
  await send(21, 40);
  const report = await back;
  assert.equal(report.recovered, true, JSON.stringify(report));
  await until(() => !(got.length < 40), 'every message');
  assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => i + 1), 'every message once, in order');
});

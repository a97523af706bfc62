// What the relay cannot show, against a tiny scripted `ws` server playing the crosswire
// server: server → client requests (frames carrying an "ackId"), a custom heartbeat message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocketConnector from '../dist/crosswire.mjs';
import { WebSocketImpl, STEP, next, within, scriptedServer, received } from './helpers.mjs';

test('requests with an ackId are answered with the handler\'s value; on() listeners still see them', async (t) => {
  const server = await scriptedServer();
  const client = new WebSocketConnector({ url: server.url, WebSocket: WebSocketImpl, customParams: { id: 'me' } });
  t.after(async () => {
    client.manualClose();
    await server.close();
  });
  const opened = next(client, 'open');
  const socket = await server.accept();
  await opened;
  assert.equal(socket.path, '/app?id=me');

  const seen = [];
  client.on('whoami', (payload) => seen.push(payload));
  client.onRequest('whoami', (payload) => ({ name: 'Sam', asked: payload }));
  client.onRequest('slow', async (payload) => {
    await new Promise((r) => setTimeout(r, 50));
    return payload * 2;
  });
  client.onRequest('nothing', () => undefined);

  socket.send(JSON.stringify({ event: 'whoami', payload: { q: 1 }, ackId: 'a1' }));
  assert.deepEqual(await received(socket), { ackId: 'a1', payload: { name: 'Sam', asked: { q: 1 } } });
  assert.deepEqual(seen, [{ q: 1 }]);

  socket.send(JSON.stringify({ event: 'slow', payload: 21, ackId: 7 }));
  assert.deepEqual(await received(socket), { ackId: 7, payload: 42 });

  socket.send(JSON.stringify({ event: 'nothing', ackId: 'n' }));
  assert.deepEqual(await received(socket), { ackId: 'n', payload: null });

  // Without a request handler a request is only an event (like a seed client), not answered;
  // a handler that throws does not answer either. The next answer proves nothing came between.
  const plain = next(client, 'plain');
  socket.send(JSON.stringify({ event: 'plain', payload: 'p', ackId: 'x' }));
  assert.equal(await plain, 'p');
  const origError = console.error;
  console.error = () => {};
  client.onRequest('broken', () => {
    throw new Error('handler failed');
  });
  socket.send(JSON.stringify({ event: 'broken', payload: 1, ackId: 'b' }));
  client.offRequest('nothing');
  socket.send(JSON.stringify({ event: 'nothing', ackId: 'gone' }));
  socket.send(JSON.stringify({ event: 'whoami', payload: 2, ackId: 'a2' }));
  const answer = await received(socket);
  console.error = origError;
  assert.deepEqual(answer, { ackId: 'a2', payload: { name: 'Sam', asked: 2 } });
  // An event without ackId is not answered even with a request handler.
  socket.send(JSON.stringify({ event: 'whoami', payload: 3 }));
  socket.send(JSON.stringify({ event: 'whoami', payload: 4, ackId: 'a4' }));
  assert.deepEqual(await received(socket), { ackId: 'a4', payload: { name: 'Sam', asked: 4 } });
  assert.deepEqual(seen, [{ q: 1 }, 2, 3, 4]);
  assert.throws(() => client.onRequest('x', 'no'), TypeError);
});

test('an answer is not sent on a later connection', async (t) => {
  const server = await scriptedServer();
  const client = new WebSocketConnector({ url: server.url, WebSocket: WebSocketImpl, fastReconnectInterval: 50 });
  t.after(async () => {
    client.manualClose();
    await server.close();
  });
  let release;
  client.onRequest('wait', () => new Promise((r) => (release = r)));
  const opened = next(client, 'open');
  const first = await server.accept();
  await opened;
  first.send(JSON.stringify({ event: 'wait', ackId: 'w' }));
  await within(
    new Promise(function poll(r) {
      release ? r() : setTimeout(() => poll(r), 5);
    }),
    STEP,
    'the request handler'
  );
  const reopened = next(client, 'open');
  client.reconnect();
  const second = await server.accept();
  await reopened;
  release('too late');
  client.emit('marker', 1);
  assert.deepEqual(await received(second), { event: 'marker', payload: 1 });
});

test('a custom pingMessage: sent as is, its echo is the pong', async (t) => {
  const server = await scriptedServer('hb');
  const client = new WebSocketConnector({ url: server.url, WebSocket: WebSocketImpl, pingInterval: 50, pingMessage: 'hb' });
  t.after(async () => {
    client.manualClose();
    await server.close();
  });
  const raw = next(client, 'message', STEP, (d) => d === 'hb');
  const latency = await next(client, 'pong');
  assert.ok(typeof latency === 'number' && latency >= 0);
  await raw;
  // The default heartbeat '' is not this server's: no echo, pong-timeout, close 4002.
  const deaf = new WebSocketConnector({ url: server.url, WebSocket: WebSocketImpl, pingInterval: 50, pongTimeout: 100 });
  t.after(() => deaf.manualClose());
  await next(deaf, 'pong-timeout');
});

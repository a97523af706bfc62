// Room joins with message recovery (docs/PROTOCOL.md, "History and recovery"), against a
// scripted `ws` server: the join payload and reply, positions from events, rejoins with
// `since` after the connection drops, leave, refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocketConnector from '../dist/crosswire.mjs';
import { WebSocketImpl, STEP, next, within, scriptedServer, received } from './helpers.mjs';

const EPOCH = '18f3a9c2e7b1-0';

/** A client of `server` without heartbeat, reconnecting fast; resolves once it is open. */
async function connect(t, server, options = {}) {
  const client = new WebSocketConnector({
    url: server.url,
    WebSocket: WebSocketImpl,
    pingInterval: 0,
    fastReconnectInterval: 50,
    ...options,
  });
  t.after(() => client.manualClose());
  const opened = next(client, 'open');
  const socket = await server.accept();
  await opened;
  return { client, socket };
}

/** Answers the request `frame` on `socket` with `payload`. */
function reply(socket, frame, payload) {
  socket.send(JSON.stringify({ callbackId: frame.callbackId, payload }));
}

/** Sends event `msg` with `payload`, positioned at `offset`/`epoch` of `stream` when given. */
function say(socket, payload, stream, offset, epoch = EPOCH) {
  socket.send(JSON.stringify(stream ? { event: 'msg', payload, stream, offset, epoch } : { event: 'msg', payload }));
}

/** Joins `room`: checks the frame sent (event, payload), answers it with `answer`, returns join()'s result. */
async function joinWith(client, socket, room, answer, expectPayload = { room }) {
  const joined = client.join(room);
  const frame = await received(socket);
  assert.equal(frame.event, 'join');
  assert.deepEqual(frame.payload, expectPayload);
  assert.ok(typeof frame.callbackId === 'string');
  reply(socket, frame, answer);
  return within(joined, STEP, `join(${room})`);
}

/** Drops the connection from the server side (no close frame) and returns the next one, open. */
async function drop(client, server, socket) {
  const reopened = next(client, 'open');
  socket.terminate();
  const again = await server.accept();
  await reopened;
  return again;
}

test('join sends {room}, resolves with the reply and remembers the room and its position', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const { client, socket } = await connect(t, server);
  assert.deepEqual(client.rooms(), []);
  assert.equal(client.position('lobby'), undefined);

  const answer = { ok: true, stream: 'relay/lobby', offset: 7, epoch: EPOCH, recovered: false };
  assert.deepEqual(await joinWith(client, socket, 'lobby', answer), answer);
  assert.deepEqual(client.rooms(), ['lobby']);
  assert.deepEqual(client.position('lobby'), { offset: 7, epoch: EPOCH });
  // The position returned is a copy.
  client.position('lobby').offset = 99;
  assert.deepEqual(client.position('lobby'), { offset: 7, epoch: EPOCH });

  // A server without history: {ok: true}; the room is joined, with no position.
  assert.deepEqual(await joinWith(client, socket, 'plain', { ok: true }), { ok: true });
  assert.deepEqual(client.rooms(), ['lobby', 'plain']);
  assert.equal(client.position('plain'), undefined);

  // Joining again sends the position as `since`.
  const since = { offset: 7, epoch: EPOCH };
  const again = { ok: true, stream: 'relay/lobby', offset: 7, epoch: EPOCH, recovered: true };
  assert.deepEqual(await joinWith(client, socket, 'lobby', again, { room: 'lobby', since }), again);
  assert.deepEqual(client.rooms(), ['lobby', 'plain']);
});

test('positions follow events: a greater offset or another epoch replaces, a smaller offset does not', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const { client, socket } = await connect(t, server);
  await joinWith(client, socket, 'lobby', { ok: true, stream: 'relay/lobby', offset: 2, epoch: EPOCH, recovered: false });

  const seen = [];
  client.on('msg', function (...args) {
    seen.push(args);
  });
  const step = async (payload, offset, epoch) => {
    const got = next(client, 'msg', STEP, (p) => p === payload);
    say(socket, payload, 'relay/lobby', offset, epoch);
    await got;
    return client.position('lobby');
  };
  assert.deepEqual(await step('a', 3), { offset: 3, epoch: EPOCH });
  assert.deepEqual(await step('b', 5), { offset: 5, epoch: EPOCH });
  assert.deepEqual(await step('old', 4), { offset: 5, epoch: EPOCH }, 'a smaller offset does not go back');
  assert.deepEqual(await step('same', 5), { offset: 5, epoch: EPOCH });
  assert.deepEqual(await step('new epoch', 1, 'e2'), { offset: 1, epoch: 'e2' }, 'another epoch replaces');
  assert.deepEqual(await step('back', 9), { offset: 9, epoch: EPOCH }, 'another epoch, even an earlier one');

  // Listeners get the payload, and the position as a second argument only when there is one.
  const plain = next(client, 'msg', STEP, (p) => p === 'live');
  say(socket, 'live');
  await plain;
  assert.deepEqual(seen[0], ['a', { stream: 'relay/lobby', offset: 3, epoch: EPOCH }]);
  assert.deepEqual(seen[seen.length - 1], ['live']);
  // Incomplete or ill-typed positions are ignored.
  socket.send(JSON.stringify({ event: 'msg', payload: 'bad1', stream: 'relay/lobby', offset: '20', epoch: EPOCH }));
  socket.send(JSON.stringify({ event: 'msg', payload: 'bad2', stream: 'relay/lobby', offset: 21 }));
  socket.send(JSON.stringify({ event: 'msg', payload: 'bad3', stream: 'relay/lobby', offset: 2.5, epoch: EPOCH }));
  await next(client, 'msg', STEP, (p) => p === 'bad3');
  assert.deepEqual(seen.slice(-3), [['bad1'], ['bad2'], ['bad3']]);
  assert.deepEqual(client.position('lobby'), { offset: 9, epoch: EPOCH });

  // Events of a stream seen before its join reply (the replay) count too; the reply does not go back.
  const replayed = next(client, 'msg', STEP, (p) => p === 'r12');
  const joined = client.join('games');
  const frame = await received(socket);
  assert.deepEqual(frame.payload, { room: 'games' });
  say(socket, 'r11', 'relay/games', 11);
  say(socket, 'r12', 'relay/games', 12);
  await replayed;
  reply(socket, frame, { ok: true, stream: 'relay/games', offset: 10, epoch: EPOCH, recovered: false });
  await joined;
  assert.deepEqual(client.position('games'), { offset: 12, epoch: EPOCH });
});

test('after the connection drops, every room is joined again with `since` before `open`, and reported', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const { client, socket } = await connect(t, server);
  await joinWith(client, socket, 'lobby', { ok: true, stream: 'relay/lobby', offset: 3, epoch: EPOCH, recovered: false });
  await joinWith(client, socket, 'plain', { ok: true });
  const got = next(client, 'msg', STEP, (p) => p === 'five');
  say(socket, 'four', 'relay/lobby', 4);
  say(socket, 'five', 'relay/lobby', 5);
  await got;
  client.on('open', () => client.emit('hello', 1)); // application code on open runs after the joins

  const rejoins = [];
  client.on('rejoin', (info) => rejoins.push(info));
  const second = await drop(client, server, socket);
  const lobby = await received(second);
  const plain = await received(second);
  assert.equal(lobby.event, 'join');
  assert.deepEqual(lobby.payload, { room: 'lobby', since: { offset: 5, epoch: EPOCH } });
  assert.equal(plain.event, 'join');
  assert.deepEqual(plain.payload, { room: 'plain' });
  assert.deepEqual(await received(second), { event: 'hello', payload: 1 });

  // The server replays 6, then replies recovered; a live 7 follows.
  say(second, 'six', 'relay/lobby', 6);
  reply(second, lobby, { ok: true, stream: 'relay/lobby', offset: 6, epoch: EPOCH, recovered: true });
  reply(second, plain, { ok: true });
  const live = next(client, 'msg', STEP, (p) => p === 'seven');
  say(second, 'seven', 'relay/lobby', 7);
  await live;
  assert.deepEqual(rejoins, [
    { room: 'lobby', recovered: true, stream: 'relay/lobby', offset: 6, epoch: EPOCH },
    { room: 'plain', recovered: false, stream: undefined, offset: undefined, epoch: undefined },
  ]);
  assert.deepEqual(client.position('lobby'), { offset: 7, epoch: EPOCH });

  // Away too long, or the history lost: recovered false with another epoch, which replaces the position.
  const third = await drop(client, server, second);
  const [a, b] = [await received(third), await received(third)];
  assert.deepEqual(a.payload, { room: 'lobby', since: { offset: 7, epoch: EPOCH } });
  assert.deepEqual(b.payload, { room: 'plain' });
  await received(third); // hello
  const reloaded = next(client, 'rejoin', STEP, (info) => info.room === 'lobby');
  reply(third, a, { ok: true, stream: 'relay/lobby', offset: 2, epoch: 'e2', recovered: false });
  assert.deepEqual(await reloaded, { room: 'lobby', recovered: false, stream: 'relay/lobby', offset: 2, epoch: 'e2' });
  assert.deepEqual(client.position('lobby'), { offset: 2, epoch: 'e2' });

  // A refused rejoin is reported as rejoin-error; the room stays joined (tried again next time).
  const refused = next(client, 'rejoin-error');
  reply(third, b, { ok: false, error: 'room closed' });
  const failed = await refused;
  assert.equal(failed.room, 'plain');
  assert.equal(failed.error.message, 'room closed');
  assert.equal(failed.error.errorCode, 'REFUSED');
  assert.deepEqual(client.rooms(), ['lobby', 'plain']);
});

test('leave sends {room} and forgets the room and its position: not joined again after a reconnect', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const { client, socket } = await connect(t, server);
  await joinWith(client, socket, 'lobby', { ok: true, stream: 'relay/lobby', offset: 3, epoch: EPOCH, recovered: false });
  await joinWith(client, socket, 'games', { ok: true, stream: 'relay/games', offset: 8, epoch: EPOCH, recovered: false });

  const left = client.leave('lobby');
  assert.deepEqual(client.rooms(), ['games'], 'forgotten at once');
  assert.equal(client.position('lobby'), undefined);
  const frame = await received(socket);
  assert.equal(frame.event, 'leave');
  assert.deepEqual(frame.payload, { room: 'lobby' });
  reply(socket, frame, { ok: true });
  assert.deepEqual(await left, { ok: true });

  client.on('open', () => client.emit('marker'));
  const second = await drop(client, server, socket);
  const rejoin = await received(second);
  assert.deepEqual(rejoin.payload, { room: 'games', since: { offset: 8, epoch: EPOCH } });
  assert.deepEqual(await received(second), { event: 'marker', payload: null }, 'only games is joined again');

  // Joining the room again starts afresh, without `since`.
  reply(second, rejoin, { ok: true, stream: 'relay/games', offset: 8, epoch: EPOCH, recovered: true });
  await joinWith(client, second, 'lobby', { ok: true, stream: 'relay/lobby', offset: 4, epoch: EPOCH, recovered: false });

  // A leave() while a join() waits for its reply wins: the late reply does not join the room again.
  const joining = client.join('quick');
  const join = await received(second);
  const leaving = client.leave('quick');
  const leave = await received(second);
  reply(second, join, { ok: true, stream: 'relay/quick', offset: 1, epoch: EPOCH, recovered: false });
  reply(second, leave, { ok: true });
  await joining;
  await leaving;
  assert.deepEqual(client.rooms(), ['games', 'lobby']);

  // The same for a leave() while a rejoin waits for its reply: no `rejoin` for that room.
  const rejoined = [];
  client.on('rejoin', (info) => rejoined.push(info.room));
  const third = await drop(client, server, second);
  const [games, lobby] = [await received(third), await received(third)];
  assert.deepEqual(lobby.payload, { room: 'lobby', since: { offset: 4, epoch: EPOCH } });
  await received(third); // marker
  const leavingLobby = client.leave('lobby');
  reply(third, await received(third), { ok: true });
  await leavingLobby;
  const last = next(client, 'rejoin', STEP, (info) => info.room === 'games');
  reply(third, lobby, { ok: true, stream: 'relay/lobby', offset: 4, epoch: EPOCH, recovered: true });
  reply(third, games, { ok: true, stream: 'relay/games', offset: 8, epoch: EPOCH, recovered: true });
  await last;
  assert.deepEqual(rejoined, ['games']);
  assert.deepEqual(client.rooms(), ['games']);

  // manualClose() forgets nothing.
  client.manualClose();
  assert.deepEqual(client.rooms(), ['games']);
  assert.deepEqual(client.position('games'), { offset: 8, epoch: EPOCH });
});

test('join rejects on {ok: false}, a timeout, a closed connection or a bad room; custom event names', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const { client, socket } = await connect(t, server, { joinEvent: 'enter', leaveEvent: 'exit' });

  const refused = client.join('vip');
  const frame = await received(socket);
  assert.equal(frame.event, 'enter');
  reply(socket, frame, { ok: false, error: 'not allowed' });
  await assert.rejects(refused, (e) => e.message === 'not allowed' && e.error === 'not allowed' && e.errorCode === 'REFUSED');
  assert.deepEqual(client.rooms(), [], 'a refused room is not joined');

  const bare = client.join('vip');
  reply(socket, await received(socket), { ok: false });
  await assert.rejects(bare, (e) => e.errorCode === 'REFUSED' && /refused/.test(e.message));

  const slow = client.join('slow', { callbackTimeout: 50 });
  await received(socket);
  await assert.rejects(slow, (e) => e.errorCode === 'CALLBACK_TIMEOUT');
  assert.deepEqual(client.rooms(), []);

  await assert.rejects(client.join(''), (e) => e.errorCode === 'INVALID_ARGUMENT');
  await assert.rejects(client.join(5), (e) => e.errorCode === 'INVALID_ARGUMENT');
  await assert.rejects(client.leave(null), (e) => e.errorCode === 'INVALID_ARGUMENT');

  const entered = client.join('ok');
  reply(socket, await received(socket), { ok: true });
  await entered;
  assert.deepEqual(client.rooms(), ['ok']);
  const exit = client.leave('ok');
  const exitFrame = await received(socket);
  assert.equal(exitFrame.event, 'exit');
  reply(socket, exitFrame, { ok: false, error: 'not in it' });
  await assert.rejects(exit, (e) => e.errorCode === 'REFUSED' && e.message === 'not in it');
  assert.deepEqual(client.rooms(), []);

  client.manualClose();
  await assert.rejects(client.join('late'), (e) => e.errorCode === 'WS_NOT_OPEN');
});

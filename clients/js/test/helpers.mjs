// Test helpers: a real `crosswire serve` process, event waiting with explicit timeouts.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocketImpl, { WebSocketServer } from 'ws';

export { WebSocketImpl };

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..');
export const BINARY = process.env.CROSSWIRE_BIN || join(root, '../../target/debug/crosswire');

/** Generous bound for one step (an open, a reply, an event). */
export const STEP = 5000;

/** Fails after `ms` with `what` in the message. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the argument of the next `event` of `client` (optionally one passing `filter`). */
export function next(client, event, ms = STEP, filter = () => true) {
  return within(
    new Promise((resolve) => {
      const fn = (arg) => {
        if (!filter(arg)) return;
        client.off(event, fn);
        resolve(arg);
      };
      client.on(event, fn);
    }),
    ms,
    `event '${event}'`
  );
}

/** Collects every `event` of `client`; `nth(n)` waits until there are n. */
export function collect(client, event) {
  const items = [];
  const waiters = [];
  client.on(event, (arg) => {
    items.push([arg, Date.now()]);
    for (const w of waiters.splice(0)) w();
  });
  items.nth = (n, ms = STEP) =>
    within(
      new Promise(function check(resolve) {
        if (items.length >= n) resolve(items[n - 1][0]);
        else waiters.push(() => check(resolve));
      }),
      ms,
      `${n} '${event}' events`
    );
  return items;
}

/** Records every built-in event of `client` as [name, arg, time]. */
export function record(client) {
  const log = [];
  for (const name of ['open', 'close', 'error', 'ping', 'pong', 'reconnect', 'repeat-limit', 'pong-timeout']) {
    client.on(name, (arg) => log.push([name, arg, Date.now()]));
  }
  log.names = () => log.map((e) => e[0]);
  return log;
}

/**
 * A `ws` server on a free port playing the crosswire server, for what the relay cannot show.
 * `accept()` resolves with its next connection; `received(socket)` reads what the client sent.
 * Heartbeat frames (`heartbeat`) are echoed.
 */
export async function scriptedServer(heartbeat = '') {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const sockets = [];
  const waiting = [];
  wss.on('connection', (socket, req) => {
    socket.path = req.url;
    socket.inbox = [];
    socket.waiters = [];
    socket.on('message', (data) => {
      const text = data.toString();
      if (text === heartbeat) socket.send(text);
      const waiter = socket.waiters.shift();
      if (waiter) waiter(text);
      else socket.inbox.push(text);
    });
    const w = waiting.shift();
    if (w) w(socket);
    else sockets.push(socket);
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/app`,
    accept: () => within(new Promise((r) => (sockets.length ? r(sockets.shift()) : waiting.push(r))), STEP, 'a connection'),
    close: () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(resolve);
      }),
  };
}

/** The next JSON frame a scripted server's `socket` received, heartbeats ('') skipped. */
export function received(socket, ms = STEP) {
  return within(
    new Promise(function take(resolve) {
      const text = socket.inbox.shift();
      if (text !== undefined) return text === '' ? take(resolve) : resolve(text);
      socket.waiters.push((t) => (t === '' ? take(resolve) : resolve(t)));
    }),
    ms,
    'a frame from the client'
  ).then((t) => JSON.parse(t));
}

/** A running `crosswire serve`. */
export class Relay {
  static async start(port = 0, extra = []) {
    if (!existsSync(BINARY)) {
      throw new Error(`${BINARY} not found: build it with \`cargo build -p crosswire-cli\` (test.sh does)`);
    }
    const env = { ...process.env, NO_COLOR: '1', RUST_LOG: 'info', RUST_LOG_STYLE: 'never' };
    for (const key of ['CROSSWIRE_HOST', 'CROSSWIRE_PORT', 'CROSSWIRE_NAME']) delete env[key];
    const child = spawn(BINARY, ['serve', '--host', '127.0.0.1', '--port', String(port), ...extra], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const relay = new Relay(child);
    await within(
      new Promise((resolve, reject) => {
        const onLine = (chunk) => {
          relay.output += chunk;
          const m = /crosswire relay ready.*?addr=(\S+)/.exec(relay.output);
          if (m && !relay.addr) {
            relay.addr = m[1];
            resolve();
          }
        };
        child.stdout.setEncoding('utf8').on('data', onLine);
        child.stderr.setEncoding('utf8').on('data', onLine);
        child.once('exit', (code, signal) =>
          reject(new Error(`crosswire serve exited (${code ?? signal}) before it was ready:\n${relay.output}`))
        );
      }),
      20000,
      'crosswire serve to be ready'
    ).catch((e) => {
      child.kill('SIGKILL');
      throw e;
    });
    relay.port = Number(relay.addr.split(':').pop());
    relay.url = `ws://127.0.0.1:${relay.port}`;
    return relay;
  }

  constructor(child) {
    this.child = child;
    this.output = '';
    this.addr = null;
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  /** SIGKILL: the server dies without closing anything. */
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGCONT');
      this.child.kill('SIGKILL');
    }
    await within(this.exited, STEP, 'crosswire serve to exit');
  }

  /** Freezes the process (it stops answering heartbeats; the kernel still accepts bytes). */
  freeze() {
    this.child.kill('SIGSTOP');
  }

  thaw() {
    this.child.kill('SIGCONT');
  }
}

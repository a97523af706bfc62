// End-to-end test of the admin dashboard of `crosswire serve` (`/admin`) in a real browser
// (headless Chromium, driven by playwright-core): a cluster of two `crosswire serve --admin-token`
// nodes and one redis-server, plain WebSocket clients (the `ws` package) on both nodes, some in
// a room and sending messages through the relay; the dashboard, opened on node A as
// `/admin#token=…`, must show both nodes with their connection counts, the room with its size
// summed over the nodes, message rates that rise while the clients send, an id of node B
// looked up (node B, its rooms), and a disconnect that closes that client with code 4000.
//
// Needs ../../target/debug/crosswire (or CROSSWIRE_BIN), redis-server on PATH and Chromium at
// /usr/bin/chromium (or CHROMIUM_BIN); test.sh provides all three. Screenshots go to
// <repo>/test-artifacts/; with UPDATE_DEMO_SCREENSHOT=1, admin.png is also copied to
// docs/admin.png (the README's picture).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '../..');
const BINARY = process.env.CROSSWIRE_BIN || join(repo, 'target/debug/crosswire');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const REDIS = process.env.REDIS_SERVER || 'redis-server';
const ARTIFACTS = join(repo, 'test-artifacts');
/** The admin token of both nodes (this test's own cluster). */
const TOKEN = 'admin-test-token';

/** Generous bound for one step seen in the page (a join, a message, a reconnect). */
const STEP = 15_000;
/** Bound for a process to start and be ready. */
const START = 20_000;

const t0 = Date.now();
const say = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

/** Fails after `ms` with `what` in the message. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (async, truthy when done) every 100 ms for at most `ms`. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A port that was free a moment ago (the kernel picked it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Every child process started by this file, killed in `after` whatever happened. */
const children = new Set();

/** A child process with its output kept (printed when the test fails). */
class Child {
  constructor(label, cmd, args) {
    this.label = label;
    this.output = '';
    const env = { ...process.env, NO_COLOR: '1', RUST_LOG: 'info', RUST_LOG_STYLE: 'never' };
    for (const key of ['CROSSWIRE_HOST', 'CROSSWIRE_PORT', 'CROSSWIRE_NAME', 'CROSSWIRE_REDIS', 'CROSSWIRE_ADMIN_TOKEN']) delete env[key];
    this.proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this);
    this.exited = new Promise((resolve) =>
      this.proc.once('exit', (code, signal) => {
        children.delete(this);
        resolve(code ?? signal);
      })
    );
    this.spawnError = new Promise((_, reject) => this.proc.once('error', reject));
    this.spawnError.catch(() => {});
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      stream.setEncoding('utf8').on('data', (chunk) => {
        this.output += chunk;
        if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
      });
    }
  }

  running() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Waits until `re` matches the output; fails if the process exits first. */
  async waitFor(re, ms, what) {
    const exited = this.exited.then((code) => {
      throw new Error(`${this.label} exited (${code}) before ${what}:\n${this.output}`);
    });
    exited.catch(() => {});
    const seen = until(() => re.exec(this.output), ms, `${this.label}: ${what}`);
    return Promise.race([seen, exited, this.spawnError]);
  }

  /** SIGKILL: the process dies without closing anything. */
  async kill() {
    if (this.running()) this.proc.kill('SIGKILL');
    await within(this.exited, 5000, `${this.label} to exit`);
  }
}

/** Answers whether a Redis server answers PING on `port`. */
function redisPing(port) {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      got += d;
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
  });
}

async function startRedis(port) {
  const redis = new Child(`redis-server :${port}`, REDIS, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ]);
  await Promise.race([until(() => redisPing(port), START, `redis-server on port ${port}`), redis.spawnError]);
  return redis;
}

/**
 * Starts `crosswire serve --name <name> --admin-token TOKEN` as one node of the cluster (port 0:
 * the kernel picks; the bound port is read back).
 */
async function startNode(name, redisPort) {
  const node = new Child(name, BINARY, [
    'serve', '--host', '127.0.0.1', '--port', '0', '--name', name,
    '--redis', `redis://127.0.0.1:${redisPort}`, '--threads', '1', '--admin-token', TOKEN,
  ]);
  const m = await node.waitFor(/crosswire relay ready.*?addr=(\S+)/, START, 'crosswire relay ready');
  node.port = Number(m[1].split(':').pop());
  node.http = `http://127.0.0.1:${node.port}`;
  node.ws = `ws://127.0.0.1:${node.port}`;
  return node;
}

/** Waits until the node's GET /healthz lists every one of `names` and reports a healthy broker. */
async function waitForCluster(node, names) {
  return until(
    async () => {
      const res = await fetch(`${node.http}/healthz`);
      if (!res.ok) return false;
      const body = await res.json();
      return names.every((n) => body.nodes.includes(n)) && body.broker?.healthy ? body : false;
    },
    START,
    `${node.label}'s /healthz to list ${names.join(', ')}`
  );
}

// ---- plain WebSocket clients of the relay ---------------------------------------------------

/** Every client opened by this file, terminated in `after`. */
const clients = new Set();

/**
 * A relay client bound to `id` on `node` (the `ws` package, no reconnects): `request` sends an
 * event asking for a reply, `send` one without; `closed` resolves with the close code and
 * reason the client saw; `received` counts the frames that came.
 */
async function relayClient(node, id) {
  const ws = new WebSocket(`${node.ws}/?id=${encodeURIComponent(id)}`);
  const client = { id, node: node.label, ws, received: 0, pending: new Map(), next: 0 };
  clients.add(client);
  client.closed = new Promise((resolve) => ws.once('close', (code, reason) => {
    clients.delete(client);
    resolve({ code, reason: reason.toString() });
  }));
  ws.on('message', (data) => {
    client.received += 1;
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return;
    }
    const waiting = frame.callbackId !== undefined && client.pending.get(frame.callbackId);
    if (waiting) {
      client.pending.delete(frame.callbackId);
      waiting(frame.payload);
    }
  });
  client.send = (event, payload) => ws.send(JSON.stringify({ event, payload }));
  client.request = (event, payload) => {
    const callbackId = `${id}-${++client.next}`;
    const reply = new Promise((resolve) => client.pending.set(callbackId, resolve));
    ws.send(JSON.stringify({ event, payload, callbackId }));
    return within(reply, STEP, `${id}: reply to ${event}`);
  };
  await within(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), STEP, `${id} to connect to ${node.label}`);
  assert.deepEqual(await client.request('echo', 'hello'), 'hello');
  return client;
}

/** The HTTP status that `node` answers an upgrade of `/admin/ws?<query>` with (101 when it upgrades). */
function adminUpgradeStatus(node, query) {
  return within(new Promise((resolve, reject) => {
    const ws = new WebSocket(`${node.ws}/admin/ws${query}`);
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode);
      ws.terminate();
    });
    ws.once('open', () => {
      resolve(101);
      ws.close();
    });
    ws.once('error', (e) => {
      if (!/Unexpected server response/.test(e.message)) reject(e);
    });
  }), STEP, `/admin/ws${query} on ${node.label}`);
}

// ---- page helpers ---------------------------------------------------------------------------

/** The text of `[data-field=field]` in the row `row` (a CSS selector) of the page, trimmed. */
const field = (page, row, name) => page.locator(`${row} [data-field="${name}"]`).first().textContent().then((t) => t.trim());

/** Waits until `check` (run in the page with `arg`) holds. */
const pageUntil = (page, check, arg, what) =>
  page.waitForFunction(check, arg, { timeout: STEP, polling: 100 }).catch((e) => {
    throw new Error(`page: ${what}: ${e.message}`);
  });

/** Waits until node `node`'s row shows `connections` connections. */
function waitForConnections(page, node, connections) {
  return pageUntil(
    page,
    ({ node, connections }) =>
      document.querySelector(`#nodes tr[data-node="${node}"] [data-field="connections"]`)?.textContent.trim() === String(connections),
    { node, connections },
    `${node} to show ${connections} connections`
  );
}

// ---- the test -------------------------------------------------------------------------------

let redis, nodeA, nodeB, browser, page;
const pageErrors = [];

before(async () => {
  assert.ok(existsSync(BINARY), `${BINARY} not found: build it with \`cargo build -p crosswire-cli\` (test.sh does)`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium package (test.sh does)`);
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  try {
    for (const client of [...clients]) client.ws.terminate();
    if (browser) await within(browser.close(), 10_000, 'the browser to close').catch((e) => say(String(e)));
  } finally {
    for (const child of [...children]) {
      await child.kill().catch((e) => say(String(e)));
    }
  }
});

// Whatever happens (an uncaught error, a signal), the servers must not outlive the test.
process.on('exit', () => {
  for (const child of children) {
    try {
      child.proc.kill('SIGKILL');
    } catch {}
  }
});

async function screenshot(page, name) {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  say(`screenshot: ${path}`);
  return path;
}

test('the admin dashboard shows, inspects and disconnects the clients of a two-node cluster', { timeout: 120_000 }, async () => {
  try {
    await scenario();
  } catch (e) {
    // Leave what is needed to understand the failure: a screenshot, page errors, server output.
    if (page && !page.isClosed()) await screenshot(page, 'admin-failure.png').catch(() => {});
    for (const err of pageErrors) console.log(`page: ${err}`);
    for (const child of [redis, nodeA, nodeB]) {
      if (child) console.log(`--- ${child.label} output (last 4000 chars):\n${child.output.slice(-4000)}`);
    }
    throw e;
  } finally {
    clearInterval(traffic);
  }
});

let traffic;

async function scenario() {
  const redisPort = await freePort();
  redis = await startRedis(redisPort);
  say(`redis-server on port ${redisPort}`);
  [nodeA, nodeB] = await Promise.all([startNode('node-a', redisPort), startNode('node-b', redisPort)]);
  say(`node-a on ${nodeA.port}, node-b on ${nodeB.port}`);
  await Promise.all([waitForCluster(nodeA, ['node-a', 'node-b']), waitForCluster(nodeB, ['node-a', 'node-b'])]);
  say('both nodes see the cluster');

  // The admin socket takes only the token; the application's sockets know nothing of it.
  assert.equal(await adminUpgradeStatus(nodeA, ''), 401);
  assert.equal(await adminUpgradeStatus(nodeA, '?token=wrong'), 401);
  assert.equal(await adminUpgradeStatus(nodeA, `?token=${TOKEN}`), 101);
  say('/admin/ws: 401 without the token or with a wrong one, 101 with it');

  // Three clients on node A, two on node B; four of them in room "general" (two per node),
  // one in "lobby".
  const [a1, a2, a3] = await Promise.all(['ann', 'amy', 'abe'].map((id) => relayClient(nodeA, id)));
  const [b1, b2] = await Promise.all(['bob', 'ben'].map((id) => relayClient(nodeB, id)));
  for (const c of [a1, a2, b1, b2]) assert.deepEqual(await c.request('join', { room: 'general' }), { ok: true });
  assert.deepEqual(await a3.request('join', { room: 'lobby' }), { ok: true });
  say('5 clients connected: 3 on node-a, 2 on node-b; 4 in general, 1 in lobby');

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  say(`browser ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 680 } });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(`console: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') pageErrors.push(`${r.status()} for ${r.url()}`);
  });
  await page.goto(`${nodeA.http}/admin#token=${TOKEN}`, { timeout: STEP });
  assert.equal(await page.title(), 'crosswire admin');

  // Both nodes, with the connections this test made (the page's own socket is the admin
  // server's, not counted).
  await pageUntil(page, () => document.getElementById('status').textContent.trim() === 'connected', null, 'connected');
  await waitForConnections(page, 'node-a', 3);
  await waitForConnections(page, 'node-b', 2);
  assert.equal(await page.locator('#node').textContent(), 'node-a');
  assert.deepEqual(
    await page.locator('#nodes tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.node)),
    ['node-a', 'node-b']
  );
  assert.equal(await page.locator('#total-connections').textContent(), '5');
  for (const node of ['node-a', 'node-b']) {
    assert.equal(await field(page, `#nodes tr[data-node="${node}"]`, 'broker'), 'healthy');
    assert.equal(await field(page, `#brokers tr[data-node="${node}"]`, 'healthy'), 'healthy');
    assert.match(await field(page, `#brokers tr[data-node="${node}"]`, 'ping_ms'), /^\d+\.\d+$/);
  }
  say('both nodes listed with 3 and 2 connections, brokers healthy');

  // The rooms, their sizes summed over the nodes.
  const general = '#rooms tr[data-room="general"][data-namespace="relay"]';
  await pageUntil(page, (sel) => document.querySelector(`${sel} [data-field="size"]`)?.textContent.trim() === '4', general, 'room general with 4 members');
  assert.equal(await field(page, '#rooms tr[data-room="lobby"]', 'size'), '1');
  assert.deepEqual(
    await page.locator('#rooms tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.room)),
    ['general', 'lobby']
  );
  say('rooms: general 4 (2 + 2), lobby 1');

  // Traffic: a message to the room every 50 ms from each node; the rates rise on both.
  let sent = 0;
  traffic = setInterval(() => {
    for (const c of [a1, b1]) {
      if (c.ws.readyState === WebSocket.OPEN) {
        c.send('room', { room: 'general', data: { n: ++sent } });
      }
    }
  }, 50);
  await pageUntil(
    page,
    () => ['node-a', 'node-b'].every((node) => {
      const row = document.querySelector(`#nodes tr[data-node="${node}"]`);
      const num = (f) => Number(row?.querySelector(`[data-field="${f}"]`)?.textContent);
      return num('in_rate') > 5 && num('out_rate') > 5 && num('deliveries_rate') > 5;
    }),
    null,
    'non-zero message and delivery rates on both nodes'
  );
  // Each node keeps a chart; let it get a few samples in.
  await pageUntil(
    page,
    () => [...document.querySelectorAll('#nodes svg.spark')].every((svg) => Number(svg.dataset.samples) >= 4),
    null,
    'four samples in every chart'
  );
  const rates = {};
  for (const node of ['node-a', 'node-b']) {
    rates[node] = await Promise.all(['in_rate', 'out_rate', 'deliveries_rate'].map((f) => field(page, `#nodes tr[data-node="${node}"]`, f)));
  }
  say(`rates (in, out, deliveries per second): ${JSON.stringify(rates)}`);

  // Look up an id of node B from the page on node A.
  await page.locator('#lookup-id').fill('ben');
  await page.locator('#lookup-button').click();
  await pageUntil(page, () => document.getElementById('lookup-result').dataset.node === 'node-b', null, 'ben found on node-b');
  const result = '#lookup-result';
  assert.equal(await field(page, result, 'node'), 'node-b');
  assert.equal(await field(page, result, 'id'), 'ben');
  assert.deepEqual(
    await page.locator(`${result} [data-field="rooms"] li`).evaluateAll((lis) => lis.map((li) => li.dataset.room)),
    ['general']
  );
  assert.ok(Number(await field(page, result, 'messages_in')) >= 2, 'ben sent an echo and a join');
  assert.ok(Number(await field(page, result, 'messages_out')) >= 2);
  assert.match(await field(page, result, 'queue'), /^\d+ frames, \d+ bytes$/);
  say(`ben: on ${await field(page, result, 'node')}, in ${await field(page, result, 'messages_in')}, out ${await field(page, result, 'messages_out')}`);

  // A chart with some history for the picture.
  await page.waitForFunction(
    () => [...document.querySelectorAll('#nodes svg.spark')].every((svg) => Number(svg.dataset.samples) >= 12),
    null,
    { timeout: 30_000, polling: 200 }
  );
  const shot = await screenshot(page, 'admin.png');
  if (process.env.UPDATE_DEMO_SCREENSHOT === '1') {
    copyFileSync(shot, join(repo, 'docs/admin.png'));
    say('copied to docs/admin.png');
  }

  // A look-up of an id no one has.
  await page.locator('#lookup-id').fill('nobody');
  await page.locator('#lookup-button').click();
  await pageUntil(page, () => document.getElementById('lookup-message').dataset.state === 'not-found', null, 'nobody not found');
  assert.ok(await page.locator('#lookup-result').isHidden());

  // Disconnect ben from node A's page: his client on node B sees close code 4000.
  await page.locator('#lookup-id').fill('ben');
  await page.locator('#lookup-button').click();
  await pageUntil(page, () => document.getElementById('lookup-result').dataset.node === 'node-b', null, 'ben found again');
  await page.locator('#disconnect-button').click();
  const closed = await within(b2.closed, STEP, 'ben to be disconnected');
  assert.deepEqual(closed, { code: 4000, reason: 'disconnected by an operator' });
  await pageUntil(page, () => document.getElementById('disconnect-result').dataset.state === 'disconnected', null, 'the disconnect confirmed');
  await waitForConnections(page, 'node-b', 1);
  await pageUntil(page, (sel) => document.querySelector(`${sel} [data-field="size"]`)?.textContent.trim() === '3', general, 'room general with 3 members');
  say('ben disconnected with 4000; node-b shows 1 connection, general 3 members');

  clearInterval(traffic);
  assert.ok(sent > 0);
  for (const c of [a1, a2, a3, b1]) assert.equal(c.ws.readyState, WebSocket.OPEN, `${c.id} still connected`);
  assert.deepEqual(pageErrors, [], 'errors in the page');
}

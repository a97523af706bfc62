// End-to-end test of the demo page of `crosswire serve` in a real browser (headless Chromium,
// driven by playwright-core): a cluster of two `crosswire serve` nodes and one redis-server,
// page A on node A and page B on node B join the same room through the UI and chat; then
// node B is killed, page B shows that it is reconnecting, node B comes back on the same port
// and page B reconnects and chats again.
//
// Needs ../../target/debug/crosswire (or CROSSWIRE_BIN), redis-server on PATH and Chromium at
// /usr/bin/chromium (or CHROMIUM_BIN); test.sh provides all three. Screenshots go to
// <repo>/test-artifacts/; with UPDATE_DEMO_SCREENSHOT=1, page A's is also copied to
// docs/demo.png (the README's picture).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '../..');
const BINARY = process.env.CROSSWIRE_BIN || join(repo, 'target/debug/crosswire');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const REDIS = process.env.REDIS_SERVER || 'redis-server';
const ARTIFACTS = join(repo, 'test-artifacts');

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
    for (const key of ['CROSSWIRE_HOST', 'CROSSWIRE_PORT', 'CROSSWIRE_NAME', 'CROSSWIRE_REDIS']) delete env[key];
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
 * Starts `crosswire serve --name <name>` (port 0: the kernel picks; the bound port is read back),
 * with permessage-deflate on for every message, so the pages (Chromium offers the extension)
 * read compressed frames and send them.
 */
async function startNode(name, port, redisPort) {
  const node = new Child(name, BINARY, [
    'serve', '--host', '127.0.0.1', '--port', String(port), '--name', name,
    '--redis', `redis://127.0.0.1:${redisPort}`, '--threads', '1',
    '--permessage-deflate', '--deflate-min-size', '0',
  ]);
  const m = await node.waitFor(/crosswire relay ready.*?addr=(\S+)/, START, 'crosswire relay ready');
  node.port = Number(m[1].split(':').pop());
  node.http = `http://127.0.0.1:${node.port}`;
  return node;
}

/** Waits until the node's GET /healthz lists every one of `names` and reports a healthy broker. */
async function waitForCluster(node, names) {
  return until(
    async () => {
      const res = await fetch(`${node.http}/healthz`);
      if (!res.ok) return false;
      const body = await res.json();
      return names.every((n) => body.nodes.includes(n)) ? body : false;
    },
    START,
    `${node.label}'s /healthz to list ${names.join(', ')}`
  );
}

// ---- page helpers ---------------------------------------------------------------------------

const text = (page, sel) => page.locator(sel).textContent();

/** Joins `room` as `name` through the form. */
async function joinRoom(page, name, room) {
  await page.locator('#name').fill(name);
  await page.locator('#room').fill(room);
  await page.locator('#join-button').click();
  await page.locator('#text').waitFor({ state: 'visible', timeout: STEP });
}

/** Waits until the page says connected, to `node`, with every one of `names` in #members. */
async function waitForRoom(page, node, names) {
  await page.waitForFunction(
    ({ node, names }) => {
      const $ = (id) => document.getElementById(id);
      const members = [...$('members').querySelectorAll('li')].map((li) => li.textContent.trim());
      return (
        $('status').textContent.trim() === 'connected' &&
        $('node').textContent.trim() === node &&
        names.every((n) => members.includes(n))
      );
    },
    { node, names },
    { timeout: STEP, polling: 100 }
  );
}

/** Sends `message` through the chat form. */
async function send(page, message) {
  await page.locator('#text').fill(message);
  await page.locator('#send-button').click();
}

/** Waits until #messages holds a chat line from `from` with `message` and "via <node>". */
async function waitForMessage(page, from, message, node) {
  await page.waitForFunction(
    ({ from, message, node }) =>
      [...document.querySelectorAll('#messages li.chat')].some((li) => {
        const who = li.querySelector('.from')?.textContent;
        const via = li.querySelector('.via')?.textContent;
        return who === from && li.textContent.includes(message) && via === `via ${node}`;
      }),
    { from, message, node },
    { timeout: STEP, polling: 100 }
  );
}

// ---- the test -------------------------------------------------------------------------------

let redis, nodeA, nodeB, browser, pageA, pageB;
const pageErrors = [];

before(async () => {
  assert.ok(existsSync(BINARY), `${BINARY} not found: build it with \`cargo build -p crosswire-cli\` (test.sh does)`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium package (test.sh does)`);
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  try {
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
  await page.screenshot({ path });
  say(`screenshot: ${path}`);
  return path;
}

test('two pages on two nodes chat through the demo page, and page B survives a restart of node B', { timeout: 120_000 }, async () => {
  try {
    await scenario();
  } catch (e) {
    // Leave what is needed to understand the failure: screenshots, page errors, server output.
    for (const [page, name] of [[pageA, 'demo-node-a-failure.png'], [pageB, 'demo-node-b-failure.png']]) {
      if (page && !page.isClosed()) await screenshot(page, name).catch(() => {});
    }
    for (const err of pageErrors) console.log(`page: ${err}`);
    for (const child of [redis, nodeA, nodeB]) {
      if (child) console.log(`--- ${child.label} output (last 4000 chars):\n${child.output.slice(-4000)}`);
    }
    throw e;
  }
});

async function scenario() {
  const redisPort = await freePort();
  redis = await startRedis(redisPort);
  say(`redis-server on port ${redisPort}`);

  [nodeA, nodeB] = await Promise.all([startNode('node-a', 0, redisPort), startNode('node-b', 0, redisPort)]);
  say(`node-a on ${nodeA.port}, node-b on ${nodeB.port}`);
  await Promise.all([waitForCluster(nodeA, ['node-a', 'node-b']), waitForCluster(nodeB, ['node-a', 'node-b'])]);
  say('both nodes see the cluster');

  // chromium.launch gives the browser a fresh, empty --user-data-dir of its own (a temporary
  // directory it removes on close).
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

  // Two contexts: two independent users, like two browsers.
  const open = async (label) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 560 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on('console', (m) => {
      // A failed load is reported by the 'response' handler below, with its address.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
        pageErrors.push(`${label} console: ${m.text()}`);
      }
    });
    page.on('response', (r) => {
      // The page has no favicon; the browser asks for one anyway.
      if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') {
        pageErrors.push(`${label}: ${r.status()} for ${r.url()}`);
      }
    });
    return page;
  };
  [pageA, pageB] = await Promise.all([open('page A'), open('page B')]);
  await pageA.goto(`${nodeA.http}/`, { timeout: STEP });
  await pageB.goto(`${nodeB.http}/`, { timeout: STEP });
  assert.equal(await pageA.title(), 'crosswire demo');

  const room = 'general'; // this test's own redis-server: no one else is in it
  await joinRoom(pageA, 'alice', room);
  await waitForRoom(pageA, 'node-a', ['alice']);
  await joinRoom(pageB, 'bob', room);
  await waitForRoom(pageB, 'node-b', ['alice', 'bob']);
  await waitForRoom(pageA, 'node-a', ['alice', 'bob']);
  assert.equal(await text(pageA, '#room-name'), room);
  say(`alice (node-a) and bob (node-b) are in room ${room}`);

  await send(pageA, 'hello from node A');
  await waitForMessage(pageB, 'alice', 'hello from node A', 'node-a');
  await send(pageB, 'hi alice, this is node B');
  await waitForMessage(pageA, 'bob', 'hi alice, this is node B', 'node-b');
  say('a message each way');

  for (const page of [pageA, pageB]) {
    await page.waitForFunction(() => /^\d+(\.\d+)? ms$/.test(document.getElementById('latency').textContent.trim()), null, {
      timeout: STEP,
      polling: 100,
    });
  }
  say(`latency: A ${await text(pageA, '#latency')}, B ${await text(pageB, '#latency')}`);

  const shotA = await screenshot(pageA, 'demo-node-a.png');
  await screenshot(pageB, 'demo-node-b.png');
  if (process.env.UPDATE_DEMO_SCREENSHOT === '1') {
    copyFileSync(shotA, join(repo, 'docs/demo.png'));
    say('copied to docs/demo.png');
  }

  // Node B goes away: page B says it is reconnecting.
  const portB = nodeB.port;
  await nodeB.kill();
  say('node-b killed');
  await pageB.waitForFunction(() => /^reconnecting/.test(document.getElementById('status').textContent.trim()), null, {
    timeout: STEP,
    polling: 50,
  });
  assert.match(await pageB.locator('#status').getAttribute('class'), /\breconnecting\b/);
  say(`page B: ${await text(pageB, '#status')}`);
  await screenshot(pageB, 'demo-node-b-reconnecting.png');

  // Node B comes back on the same port: page B reconnects by itself, rejoins, chats.
  nodeB = await startNode('node-b', portB, redisPort);
  assert.equal(nodeB.port, portB);
  await Promise.all([waitForCluster(nodeA, ['node-a', 'node-b']), waitForCluster(nodeB, ['node-a', 'node-b'])]);
  say('node-b restarted');
  await pageB.waitForFunction(
    () => [...document.querySelectorAll('#log li')].filter((li) => / connected$/.test(li.textContent)).length === 2,
    null,
    { timeout: STEP, polling: 100 }
  );
  await waitForRoom(pageB, 'node-b', ['alice', 'bob']);
  say('page B reconnected');

  await send(pageA, 'welcome back, bob');
  await waitForMessage(pageB, 'alice', 'welcome back, bob', 'node-a');
  await send(pageB, 'thanks, still here');
  await waitForMessage(pageA, 'bob', 'thanks, still here', 'node-b');
  say('chat works again after the restart');
  await screenshot(pageA, 'demo-node-a-after-restart.png');
  await screenshot(pageB, 'demo-node-b-after-restart.png');

  // Chromium negotiated permessage-deflate with both nodes and read what they compressed.
  for (const node of [nodeA, nodeB]) {
    const { stats } = await (await fetch(`${node.http}/healthz`)).json();
    assert.ok(stats.deflate_connections >= 1, `${node.label} negotiated no deflate: ${JSON.stringify(stats)}`);
    assert.ok(stats.compressed_messages >= 1, `${node.label} compressed nothing: ${JSON.stringify(stats)}`);
  }
  say('both nodes spoke permessage-deflate with Chromium');

  // While node B was down, page B's connection attempts failed; Chromium logs each of them.
  assert.deepEqual(pageErrors.filter((e) => !/WebSocket connection to .* failed/.test(e)), [], 'errors in the pages');
}

// What the headless-Chromium tests of this folder share: where the binaries are, the time
// bounds, a log with timestamps, waiting helpers, child processes (killed whatever happens),
// a redis-server of the test's own, `crosswire serve` nodes, the browser launch, page error
// collection, screenshots and the end-of-test cleanup. Each *.test.mjs keeps only its scenario.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
/** The root of the repository. */
export const repo = join(here, '../..');
/** The `crosswire` binary under test. */
export const BINARY = process.env.CROSSWIRE_BIN || join(repo, 'target/debug/crosswire');
/** The Chromium executable driven by playwright-core. */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
/** The redis-server executable. */
export const REDIS = process.env.REDIS_SERVER || 'redis-server';
/** Where the screenshots go. */
export const ARTIFACTS = join(repo, 'test-artifacts');

/** Generous bound for one step seen in the page (a join, a message, a reconnect). */
export const STEP = 15_000;
/** Bound for a process to start and be ready. */
export const START = 20_000;

/** Variables of the `crosswire` CLI that must not leak from the caller's environment into a child. */
const SCRUBBED_ENV = ['CROSSWIRE_HOST', 'CROSSWIRE_PORT', 'CROSSWIRE_NAME', 'CROSSWIRE_REDIS', 'CROSSWIRE_ADMIN_TOKEN'];

const t0 = Date.now();
/** Logs `msg` with the seconds since the test file started. */
export const say = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

/** Fails after `ms` with `what` in the message. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (async, truthy when done) every 100 ms for at most `ms`. */
export async function until(check, ms, what) {
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
export function freePort() {
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

/** Every child process started by the test file, killed by `shutdown` whatever happened. */
const children = new Set();

/** A child process with its output kept (printed when the test fails). */
export class Child {
  constructor(label, cmd, args) {
    this.label = label;
    this.output = '';
    const env = { ...process.env, NO_COLOR: '1', RUST_LOG: 'info', RUST_LOG_STYLE: 'never' };
    for (const key of SCRUBBED_ENV) delete env[key];
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

  /** Whether the process has neither exited nor been killed. */
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

// Whatever happens (an uncaught error, a signal), the servers must not outlive the test.
process.on('exit', () => {
  for (const child of children) {
    try {
      child.proc.kill('SIGKILL');
    } catch {}
  }
});

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

/** Starts a throwaway redis-server on `port` (no persistence) and waits until it answers PING. */
export async function startRedis(port) {
  const redis = new Child(`redis-server :${port}`, REDIS, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ]);
  await Promise.race([until(() => redisPing(port), START, `redis-server on port ${port}`), redis.spawnError]);
  return redis;
}

/**
 * Runs `crosswire <args>` as the child `label`, waits until it logs that its relay is ready and
 * reads back the bound port (so `--port 0` works): sets `port` and `http` (its base URL).
 */
export async function startCrosswire(label, args) {
  const node = new Child(label, BINARY, args);
  const m = await node.waitFor(/crosswire relay ready.*?addr=(\S+)/, START, 'crosswire relay ready');
  node.port = Number(m[1].split(':').pop());
  node.http = `http://127.0.0.1:${node.port}`;
  return node;
}

/**
 * Waits until the node's GET /healthz lists every one of `names` (and, with `healthyBroker`,
 * reports a healthy broker); returns the body.
 */
export async function waitForCluster(node, names, { healthyBroker = false } = {}) {
  return until(
    async () => {
      const res = await fetch(`${node.http}/healthz`);
      if (!res.ok) return false;
      const body = await res.json();
      return names.every((n) => body.nodes.includes(n)) && (!healthyBroker || body.broker?.healthy) ? body : false;
    },
    START,
    `${node.label}'s /healthz to list ${names.join(', ')}`
  );
}

/** For `before`: the binary and Chromium are there, and so is the screenshot folder. */
export function preflight() {
  assert.ok(existsSync(BINARY), `${BINARY} not found: build it with \`cargo build -p crosswire-cli\` (test.sh does)`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium package (test.sh does)`);
  mkdirSync(ARTIFACTS, { recursive: true });
}

/** For `after`: closes `browser` (if any, bounded) and then kills every child still running. */
export async function shutdown(browser) {
  try {
    if (browser) await within(browser.close(), 10_000, 'the browser to close').catch((e) => say(String(e)));
  } finally {
    for (const child of [...children]) {
      await child.kill().catch((e) => say(String(e)));
    }
  }
}

/**
 * Launches headless Chromium. chromium.launch gives the browser a fresh, empty --user-data-dir
 * of its own (a temporary directory it removes on close).
 */
export async function launchBrowser() {
  const browser = await chromium.launch({
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
  return browser;
}

/**
 * Pushes onto `errors` what goes wrong in `page`: uncaught errors, console errors and HTTP
 * errors (but the favicon the browser asks for anyway), each prefixed with `label` if given.
 */
export function collectPageErrors(page, errors, label) {
  const prefix = label ? `${label}: ` : '';
  page.on('pageerror', (e) => errors.push(`${prefix}${e.message}`));
  page.on('console', (m) => {
    // A failed load is reported by the 'response' handler below, with its address.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      errors.push(`${label ? `${label} ` : ''}console: ${m.text()}`);
    }
  });
  page.on('response', (r) => {
    // The pages have no favicon; the browser asks for one anyway.
    if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') {
      errors.push(`${prefix}${r.status()} for ${r.url()}`);
    }
  });
}

/** Saves a screenshot of `page` as ARTIFACTS/`name` (`options` go to page.screenshot); returns its path. */
export async function screenshot(page, name, options = {}) {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, ...options });
  say(`screenshot: ${path}`);
  return path;
}

/** With UPDATE_DEMO_SCREENSHOT=1, copies the screenshot at `path` to docs/`name` (a README picture). */
export function updateDocsPicture(path, name) {
  if (process.env.UPDATE_DEMO_SCREENSHOT === '1') {
    copyFileSync(path, join(repo, 'docs', name));
    say(`copied to docs/${name}`);
  }
}

/** After a failure: prints the page errors and the last output of each of `processes`. */
export function printFailureContext(pageErrors, processes) {
  for (const err of pageErrors) console.log(`page: ${err}`);
  for (const child of processes) {
    if (child) console.log(`--- ${child.label} output (last 4000 chars):\n${child.output.slice(-4000)}`);
  }
}

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
// What both browser tests share (processes, redis-server, nodes, browser, screenshots) is in
// harness.mjs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { STEP, collectPageErrors, freePort, launchBrowser, preflight, printFailureContext, say,
  screenshot, shutdown, startCrosswire, startRedis, updateDocsPicture, waitForCluster, within } from './harness.mjs';

/** The admin token of both nodes (this test's own cluster). */
const TOKEN = 'admin-test-token';

/**
 * Starts `crosswire serve --name <name> --admin-token TOKEN` as one node of the cluster (port 0:
 * the kernel picks; the bound port is read back).
 */
async function startNode(name, redisPort) {
  const node = await startCrosswire(name, [
    'serve', '--host', '127.0.0.1', '--port', '0', '--name', name,
    '--redis', `redis://127.0.0.1:${redisPort}`, '--threads', '1', '--admin-token', TOKEN,
  ]);
  node.ws = `ws://127.0.0.1:${node.port}`;
  return node;
}

/** Waits until the node's GET /healthz lists every one of `names` and reports a healthy broker. */
const waitForHealthyCluster = (node, names) => waitForCluster(node, names, { healthyBroker: true });

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

/** Saves a screenshot of the whole page as ARTIFACTS/`name`; returns its path. */
const fullScreenshot = (page, name) => screenshot(page, name, { fullPage: true });

before(preflight);

after(async () => {
  try {
    for (const client of [...clients]) client.ws.terminate();
  } finally {
    await shutdown(browser);
  }
});

test('the admin dashboard shows, inspects and disconnects the clients of a two-node cluster', { timeout: 120_000 }, async () => {
  try {
    await scenario();
  } catch (e) {
    // Leave what is needed to understand the failure: a screenshot, page errors, server output.
    if (page && !page.isClosed()) await fullScreenshot(page, 'admin-failure.png').catch(() => {});
    printFailureContext(pageErrors, [redis, nodeA, nodeB]);
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
  await Promise.all([waitForHealthyCluster(nodeA, ['node-a', 'node-b']), waitForHealthyCluster(nodeB, ['node-a', 'node-b'])]);
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

  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1280, height: 680 } });
  page = await context.newPage();
  collectPageErrors(page, pageErrors);
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
  const shot = await fullScreenshot(page, 'admin.png');
  updateDocsPicture(shot, 'admin.png');

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

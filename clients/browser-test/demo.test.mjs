// End-to-end test of the demo page of `crosswire serve` in a real browser (headless Chromium,
// driven by playwright-core): a cluster of two `crosswire serve` nodes and one redis-server,
// page A on node A and page B on node B join the same room through the UI and chat; then
// node B is killed, page B shows that it is reconnecting, page A says something meanwhile,
// node B comes back on the same port and page B reconnects, recovers what it missed (the nodes
// run with --history) and chats again.
//
// Needs ../../target/debug/crosswire (or CROSSWIRE_BIN), redis-server on PATH and Chromium at
// /usr/bin/chromium (or CHROMIUM_BIN); test.sh provides all three. Screenshots go to
// <repo>/test-artifacts/; with UPDATE_DEMO_SCREENSHOT=1, page A's is also copied to
// docs/demo.png (the README's picture).
// What both browser tests share (processes, redis-server, nodes, browser, screenshots) is in
// harness.mjs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { STEP, collectPageErrors, freePort, launchBrowser, preflight, printFailureContext, say,
  screenshot, shutdown, startCrosswire, startRedis, updateDocsPicture, waitForCluster } from './harness.mjs';

/**
 * Starts `crosswire serve --name <name>` (port 0: the kernel picks; the bound port is read back),
 * with permessage-deflate on for every message, so the pages (Chromium offers the extension)
 * read compressed frames and send them.
 */
async function startNode(name, port, redisPort) {
  return startCrosswire(name, [
    'serve', '--host', '127.0.0.1', '--port', String(port), '--name', name,
    '--redis', `redis://127.0.0.1:${redisPort}`, '--threads', '1',
    '--permessage-deflate', '--deflate-min-size', '0', '--history',
  ]);
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

before(preflight);
after(() => shutdown(browser));

test('two pages on two nodes chat through the demo page, and page B survives a restart of node B', { timeout: 120_000 }, async () => {
  try {
    await scenario();
  } catch (e) {
    // Leave what is needed to understand the failure: screenshots, page errors, server output.
    for (const [page, name] of [[pageA, 'demo-node-a-failure.png'], [pageB, 'demo-node-b-failure.png']]) {
      if (page && !page.isClosed()) await screenshot(page, name).catch(() => {});
    }
    printFailureContext(pageErrors, [redis, nodeA, nodeB]);
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

  browser = await launchBrowser();

  // Two contexts: two independent users, like two browsers.
  const open = async (label) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 560 } });
    const page = await context.newPage();
    collectPageErrors(page, pageErrors, label);
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
  updateDocsPicture(shotA, 'demo.png');

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
  // Alice talks while bob is away: the room's history (in Redis) keeps it for him.
  await send(pageA, 'said while you were away');

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
  await waitForMessage(pageB, 'alice', 'said while you were away', 'node-a');
  await pageB.waitForFunction(
    () => [...document.querySelectorAll('#log li')].some((li) => /every missed message recovered$/.test(li.textContent)),
    null,
    { timeout: STEP, polling: 100 }
  );
  say('page B got what was said while it was away (recovered)');

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

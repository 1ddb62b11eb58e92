// The client module (client/snapkeep.js) in Debian's headless Chromium, against the real
// binary: an app page on one origin imports the module from snapkeep's own `GET /snapkeep.js`
// on another (CORS), the way users are told to, and each scenario checks what reached the
// server (over HTTP or on disk), not only what the page believes.
//
// SNAPKEEP_BIN=$PWD/target/debug/snapkeep node --test --test-concurrency=1 tests/browser/client.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { eventually, HERE, launchBrowser, screenshot, serveApp, startServer } from './support.mjs';

const CLIENT_FILE = join(HERE, '../../client/snapkeep.js');
const SECTION = '## Use it from your web app';
/** Per test: a scenario that hangs fails. */
const TIMEOUT = 60000;
const SIGNING_KEY = 'client-test-signing-key-0123456789';

// The app: notes kept in localStorage under "notes", backed up with the client. Query
// parameters pick the server, the session, connect()'s options (JSON), where the module comes
// from (`client=app`: the app's own copy), `mode=mirror` for mirrorLocalStorage, and `spy`:
// every POST the page starts is logged to localStorage "spy" at once, so a test can see how a
// closing page sent its last state (Playwright reports no requests of a page being closed).
const APP_PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Notes: snapkeep client fixture</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; margin: 2rem; max-width: 36rem; }
  #status { display: inline-block; padding: 0 .5em; border-radius: .3em; background: #eee; }
  #status.saved { background: #c8f0c8; } #status.offline, #status.conflict { background: #ffe0a0; }
  #status.error { background: #f8c0c0; }
  pre { background: #f6f6f6; padding: .5em; white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
<h1>Notes</h1>
<p>Backup: <span id="status">connecting</span> <small id="detail"></small></p>
<p id="restored"></p>
<pre id="state"></pre>
<script type="module">
  const params = new URLSearchParams(location.search);
  const server = params.get('server');
  // A browser without fetch(keepalive): the client falls back to sendBeacon on page hide.
  if (params.has('nokeepalive')) delete Request.prototype.keepalive;
  if (params.has('spy')) {
    const log = (entry) => localStorage.setItem('spy',
      JSON.stringify([...JSON.parse(localStorage.getItem('spy') || '[]'), entry]));
    const fetch0 = window.fetch;
    window.fetch = (input, init = {}) => {
      if (init.method === 'POST') log({ via: 'fetch', keepalive: Boolean(init.keepalive), headers: init.headers });
      return fetch0(input, init);
    };
    const beacon0 = navigator.sendBeacon.bind(navigator);
    navigator.sendBeacon = (url, data) => {
      log({ via: 'sendBeacon', body: typeof data });
      return beacon0(url, data);
    };
  }
  const from = params.get('client') === 'app' ? '/snapkeep.js' : server + '/snapkeep.js';
  const { connect } = await import(from);
  const options = JSON.parse(params.get('options') || '{}');
  const client = connect({ url: server + '/api/backup', session: params.get('session'), ...options });
  window.client = client;
  window.events = [];
  const status = document.getElementById('status');
  for (const type of ['saving', 'saved', 'offline', 'conflict', 'error']) {
    client.on(type, (detail) => {
      events.push({ type, ...detail });
      status.textContent = type;
      status.className = type;
      document.getElementById('detail').textContent =
        detail.id ?? (detail.queued !== undefined ? detail.queued + ' queued' : '') ?? '';
    });
  }
  const short = (key, value) => (typeof value === 'string' && value.length > 60 ? value.slice(0, 57) + '…' : value);
  const render = () => {
    const state = params.get('mode') === 'mirror'
      ? { todos: localStorage.getItem('todos'), theme: localStorage.getItem('theme') }
      : JSON.parse(localStorage.getItem('notes'));
    document.getElementById('state').textContent = JSON.stringify(state, short, 2);
  };
  window.edit = (state) => {
    localStorage.setItem('notes', JSON.stringify(state));
    client.save(state);
    render();
  };
  if (params.get('mode') === 'mirror') {
    window.mirror = client.mirrorLocalStorage(['todos', 'theme']);
    window.restored = await window.mirror.restored;
  } else {
    window.restored = await client.restoreIfEmpty(
      () => JSON.parse(localStorage.getItem('notes')),
      (state) => localStorage.setItem('notes', JSON.stringify(state)),
    );
  }
  render();
  status.textContent = client.status;
  document.getElementById('restored').textContent = window.restored
    ? 'Restored from the latest backup.' : 'Local state found; nothing restored.';
  window.ready = true;
</script>
</html>
`;

let app;
let browser;

before(async () => {
  app = await serveApp({
    '/app.html': ['text/html; charset=utf-8', APP_PAGE],
    '/blank.html': ['text/html; charset=utf-8', '<!doctype html><title>blank</title>'],
    // The self-hosted copy, for an app that must load while snapkeep is down.
    '/snapkeep.js': ['text/javascript; charset=utf-8', readFileSync(CLIENT_FILE)],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await app?.close();
});

/** snapkeep allowing the app's origin, as SNAPKEEP_CORS_ORIGINS tells users to. */
function server(options = {}) {
  return startServer({ ...options, env: { SNAPKEEP_CORS_ORIGINS: app.origin, ...options.env } });
}

/** Opens the app in `context` and waits until its restore step is over. */
async function openApp(context, srv, session, { options = {}, query = '' } = {}) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  page.errors = errors;
  const params = new URLSearchParams({ server: srv.origin, session, options: JSON.stringify(options) });
  await page.goto(`${app.origin}/app.html?${params}${query}`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

/** Gives the app page `state` and flushes: the id it landed as, or null (queued, paused). */
function flushEdit(page, state) {
  return page.evaluate((s) => (window.edit(s), window.client.flush()), state);
}

/** Tells the page the browser is online (which starts a drain), then flushes: after that. */
function online(page) {
  return page.evaluate(() => (window.dispatchEvent(new Event('online')), window.client.flush()));
}

/** Minutes between retries: only `online` events and flushes send a queue. */
const NO_RETRY = { debounceMs: 60000, retryMs: 600000, maxRetryMs: 600000 };

/** Events of one type the page has seen so far. */
function events(page, type) {
  return page.evaluate((type) => window.events.filter((event) => event.type === type), type);
}

/** The POSTs pages of `context` logged with `spy` (read from a fresh page of the same origin). */
async function spied(context) {
  const page = await context.newPage();
  await page.goto(`${app.origin}/blank.html`);
  const log = await page.evaluate(() => JSON.parse(localStorage.getItem('spy') || '[]'));
  await page.close();
  return log;
}

/** How many requests the server answered with this method and status, from /metrics. */
async function answered(srv, method, status) {
  const text = await (await fetch(`${srv.origin}/metrics`)).text();
  const pattern = new RegExp(`^snapkeep_http_requests_total\\{.*method="${method}",status="${status}"\\} (\\d+)$`, 'gm');
  return [...text.matchAll(pattern)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** The IndexedDB queue's length, read straight from IndexedDB (not from the client). */
function queueLength(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('snapkeep');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      try {
        const count = db.transaction('queue').objectStore('queue').count();
        count.onsuccess = () => resolve(count.result);
        count.onerror = () => reject(count.error);
      } catch (error) {
        reject(error); // no queue store: the client never made its database
      } finally {
        db.close();
      }
    };
  }));
}

/** What the browser's "clear site data" does: localStorage and IndexedDB gone. */
async function clearSiteData(page, origin = app.origin) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Storage.clearDataForOrigin', { origin, storageTypes: 'local_storage,indexeddb' });
  await cdp.detach();
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.deepEqual(await page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name)), []);
}

/** A session's snapshots over HTTP, oldest first: [{ id, state }]. */
async function history(srv, session, headers = {}) {
  const listed = await fetch(`${srv.url}/${session}`, { headers });
  assert.equal(listed.status, 200);
  const { snapshots } = await listed.json();
  const out = [];
  for (const { id } of snapshots.reverse()) {
    const response = await fetch(`${srv.url}/${session}/${id}`, { headers });
    assert.equal(response.status, 200);
    out.push({ id, state: JSON.parse(await response.text()) });
  }
  return out;
}

/** The same from the data directory: the files snapkeep wrote, oldest first. */
function onDisk(srv, session) {
  const dir = join(srv.dataDir, session);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => ({ id: name.slice(0, -5), text: readFileSync(join(dir, name), 'utf8') }));
}

const states = (snapshots) => snapshots.map((s) => s.state);

test('snapkeep serves this file at /snapkeep.js, cross-origin, with an ETag', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  try {
    const response = await fetch(`${srv.origin}/snapkeep.js`, { headers: { Origin: app.origin } });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/javascript/);
    assert.ok(response.headers.get('etag'));
    assert.equal(response.headers.get('access-control-allow-origin'), app.origin);
    assert.equal(await response.text(), readFileSync(CLIENT_FILE, 'utf8'),
      'the binary embeds another snapkeep.js than client/: run `cargo build` again');
  } finally {
    await srv.stop();
  }
});

/** The first HTML example of the README's client section. */
/** The module example: the section's second HTML block (the first is the one-tag form, tested in mirror.test.mjs). */
function readmeExample() {
  const readme = readFileSync(join(HERE, '../../README.md'), 'utf8');
  assert.ok(readme.includes(SECTION), `no "${SECTION}" section in README.md`);
  const section = readme.slice(readme.indexOf(SECTION));
  const blocks = [...section.matchAll(/```html\n([\s\S]*?)```/g)];
  assert.match(blocks[1][1], /import \{ connect \}/, 'the module example comes second');
  return blocks[1][1];
}

test("the README's smallest example works as written", { timeout: TIMEOUT }, async () => {
  // Its own origin, so the page is the example and nothing else; routes are read per request.
  const routes = {};
  const own = await serveApp(routes);
  const srv = await startServer({ env: { SNAPKEEP_CORS_ORIGINS: own.origin } });
  routes['/readme.html'] = ['text/html; charset=utf-8',
    readmeExample().replaceAll('http://127.0.0.1:8080', srv.origin).replace('"user-42"', '"readme"')];
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${own.origin}/readme.html`);
    await page.waitForFunction(() => typeof window.addTodo === 'function');
    await page.evaluate(() => (window.addTodo('milk'), window.addTodo('eggs')));
    await eventually(() => page.evaluate(() => document.getElementById('status').textContent === 'saved'),
      { what: 'the status to say saved' });
    assert.deepEqual(states(await history(srv, 'readme')), [['milk', 'eggs']]);
    await clearSiteData(page, own.origin);
    await page.reload();
    await page.waitForFunction(() => typeof window.addTodo === 'function');
    assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem('todos'))), ['milk', 'eggs']);
  } finally {
    await context.close();
    await own.close();
    await srv.stop();
  }
});

test('1. storage cleared: a reload restores the latest snapshot', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const page = await openApp(context, srv, 'restore', { options: { debounceMs: 200 } });
    assert.equal(await page.evaluate(() => window.restored), false, 'nothing to restore yet');
    const posts = [];
    page.on('request', (request) => request.method() === 'POST' && posts.push(request));

    // Typing: five edits 20 ms apart are one save of the last state, once the 200 ms debounce
    // has passed; it is large, so it goes gzipped.
    const long = 'x'.repeat(4000);
    await page.evaluate(async (long) => {
      for (let n = 1; n <= 5; n++) {
        window.edit({ notes: ['milk', `edit ${n}`], long });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }, long);
    await eventually(async () => (await events(page, 'saved')).length === 1, { what: 'saved' });
    const final = { notes: ['milk', 'edit 5'], long };
    const [saved] = await events(page, 'saved');
    assert.equal(saved.status, 201);
    const files = onDisk(srv, 'restore');
    assert.deepEqual(files.map((f) => f.id), [saved.id], 'one snapshot for the whole burst');
    assert.equal(files[0].text, JSON.stringify(final), 'stored decompressed, exactly as sent');
    assert.equal(posts.length, 1);
    assert.equal(await posts[0].headerValue('content-encoding'), 'gzip');
    assert.equal(await posts[0].headerValue('snapkeep-if-none-match'), '*', 'first save of a new session');

    await clearSiteData(page);
    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    assert.equal(await page.evaluate(() => window.restored), true);
    assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem('notes'))), final);
    assert.equal(onDisk(srv, 'restore').length, 1, 'restoring writes nothing');
    await screenshot(page, 'client-restored');

    // The restored snapshot is the base of the next save: If-Match it, accepted. (Across
    // origins as Snapkeep-If-Match, which keeps Chromium's preflight cache working.)
    await page.evaluate(() => window.edit({ notes: ['milk', 'after restore'] }));
    assert.ok(await page.evaluate(() => window.client.flush()));
    assert.equal(await posts.at(-1).headerValue('snapkeep-if-match'), `"${saved.id}"`);
    assert.equal(await posts.at(-1).headerValue('if-match'), null);
    assert.deepEqual(states(await history(srv, 'restore')), [final, { notes: ['milk', 'after restore'] }]);
    assert.deepEqual(await events(page, 'conflict'), []);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('1b. restoreIfEmpty and mirror.restored resolve false, not throw, when the server cannot answer', { timeout: TIMEOUT }, async () => {
  const disabled = await server({ env: { SNAPKEEP_ENABLED: 'false' } });
  const context = await browser.newContext();
  try {
    // A disabled server (503): the app still starts, told by an offline event.
    let page = await openApp(context, disabled, 'restore-down', { query: '&client=app' });
    assert.equal(await page.evaluate(() => window.restored), false);
    const [offline] = await events(page, 'offline');
    assert.equal(offline.status, 503, JSON.stringify(offline));
    page = await openApp(context, disabled, 'restore-down-mirror', { query: '&client=app&mode=mirror' });
    assert.equal(await page.evaluate(() => window.restored), false);
    // No server at all (status 0), and a refused token (401: an error event).
    await disabled.stop();
    page = await openApp(context, disabled, 'restore-gone', { query: '&client=app' });
    assert.equal(await page.evaluate(() => window.restored), false);
    assert.equal((await events(page, 'offline'))[0].status, 0);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    await disabled.stop();
  }
  const tokened = await server({ env: { SNAPKEEP_SIGNING_KEY: SIGNING_KEY } });
  const context2 = await browser.newContext();
  try {
    const page = await openApp(context2, tokened, 'restore-401', { options: { token: 'expired' } });
    assert.equal(await page.evaluate(() => window.restored), false);
    const [error] = await events(page, 'error');
    assert.equal(error.status, 401);
    assert.deepEqual(await events(page, 'offline'), []);
  } finally {
    await context2.close();
    await tokened.stop();
  }
});

test('2. the server goes away: saves queue in IndexedDB, survive a reload, drain in order', { timeout: TIMEOUT }, async () => {
  let srv = await server();
  const { port, dataDir } = srv;
  const context = await browser.newContext();
  try {
    // The app's own copy of the module, so the page still loads while snapkeep is down.
    const options = { debounceMs: 60000, retryMs: 100, maxRetryMs: 500 };
    let page = await openApp(context, srv, 'queue', { options, query: '&client=app' });
    const v = (n) => ({ notes: [`version ${n}`] });
    const edit = (page, n) => page.evaluate((s) => (window.edit(s), window.client.flush()), v(n));
    assert.ok(await edit(page, 1));

    await srv.stop();
    for (const n of [2, 3, 4]) assert.equal(await edit(page, n), null, 'queued, not saved');
    const offline = await events(page, 'offline');
    assert.ok(offline.length >= 3);
    assert.deepEqual(offline.slice(0, 3).map((e) => e.queued), [1, 2, 3]);
    assert.equal(offline[0].status, 0, 'a network error');
    assert.equal(await queueLength(page), 3);
    assert.equal(await page.evaluate(() => window.client.queued), 3);

    // The queue is in IndexedDB: a reload keeps it, and more saves line up behind it.
    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    assert.equal(await queueLength(page), 3);
    assert.equal(await edit(page, 5), null);
    assert.equal(await queueLength(page), 4);

    srv = await server({ port, dataDir });
    await eventually(async () => (await queueLength(page)) === 0, { what: 'the queue to drain' });
    assert.deepEqual(states(await history(srv, 'queue')), [1, 2, 3, 4, 5].map(v), 'in order, none lost');
    assert.deepEqual(onDisk(srv, 'queue').map((f) => JSON.parse(f.text)), [1, 2, 3, 4, 5].map(v));
    // The queue empties just before the last `saved` event is sent: wait for that event.
    const saved = await eventually(async () => {
      const saved = await events(page, 'saved');
      return saved.at(-1)?.queued === 0 && saved;
    }, { what: 'the last saved event' });
    assert.equal(saved.at(-1).id, onDisk(srv, 'queue').at(-1).id);
    assert.deepEqual(await events(page, 'conflict'), []);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('2b. the browser goes offline: the `online` event sends the queue at once', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    // A minute between retries: only the online event can send it within the test.
    const options = { debounceMs: 60000, retryMs: 60000, maxRetryMs: 60000 };
    const page = await openApp(context, srv, 'online', { options });
    await context.setOffline(true);
    assert.equal(await page.evaluate(() => (window.edit({ n: 1 }), window.client.flush())), null);
    assert.equal(await queueLength(page), 1);
    const [offline] = await events(page, 'offline');
    assert.ok(offline.retryInMs >= 48000, `backs off a minute, got ${offline.retryInMs}`);
    await context.setOffline(false);
    await eventually(async () => (await queueLength(page)) === 0, { what: 'the queue to drain' });
    assert.deepEqual(states(await history(srv, 'online')), [{ n: 1 }]);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('2c. 429: waits as long as Retry-After says, then sends', { timeout: TIMEOUT }, async () => {
  const srv = await server({ env: { SNAPKEEP_RATE_LIMIT: '1', SNAPKEEP_RATE_BURST: '1' } });
  const context = await browser.newContext();
  try {
    const options = { debounceMs: 60000, retryMs: 10, maxRetryMs: 10 };
    const page = await openApp(context, srv, 'limited', { options });
    // Client and test share 127.0.0.1's bucket: this read empties it, so the save is limited.
    await fetch(`${srv.url}/limited`);
    const started = Date.now();
    await page.evaluate(() => (window.edit({ n: 1 }), window.client.flush()));
    // Polled on disk: a request from here would take the browser's tokens.
    await eventually(() => onDisk(srv, 'limited').length === 1, { what: 'the save to land' });
    const offline = await events(page, 'offline');
    assert.ok(offline.length >= 1, 'rate limited first');
    assert.equal(offline[0].status, 429);
    assert.equal(offline[0].retryInMs, 1000, 'Retry-After: 1, not the 10 ms backoff');
    assert.ok(Date.now() - started >= 900, 'did not come back early');
    // The file is on disk a moment before the answer reaches the page.
    await eventually(async () => (await events(page, 'saved')).length === 1, { what: 'saved' });
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('2d. site data cleared while the page is open: the client opens IndexedDB again', { timeout: TIMEOUT }, async () => {
  let srv = await server();
  const { port, dataDir } = srv;
  const context = await browser.newContext();
  try {
    const options = { debounceMs: 60000, retryMs: 60000, maxRetryMs: 60000 };
    const page = await openApp(context, srv, 'cleared', { options, query: '&client=app' });
    const edit = (n) => page.evaluate((n) => (window.edit({ n }), window.client.flush()), n);
    assert.ok(await edit(1));
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.clearDataForOrigin', { origin: app.origin, storageTypes: 'indexeddb' });
    await cdp.detach();
    assert.ok(await edit(2), 'saved after the connection was closed under it');
    // …and the queue is in IndexedDB again.
    await srv.stop();
    assert.equal(await edit(3), null);
    assert.equal(await queueLength(page), 1);
    srv = await server({ port, dataDir });
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    await eventually(async () => (await queueLength(page)) === 0, { what: 'the queue to drain' });
    assert.deepEqual(states(await history(srv, 'cleared')), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    assert.deepEqual(await events(page, 'error'), []);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('3. two tabs, one session: the second gets a conflict and overwrites nothing', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const options = { debounceMs: 60000 };
    const tabA = await openApp(context, srv, 'tabs', { options });
    const a1 = await flushEdit(tabA, { by: 'A', n: 1 });
    assert.ok(a1);
    const tabB = await openApp(context, srv, 'tabs', { options }); // knows a1
    const a2 = await flushEdit(tabA, { by: 'A', n: 2 });
    assert.ok(a2);

    assert.equal(await flushEdit(tabB, { by: 'B', n: 1 }), null, 'refused, so not saved');
    const [conflict] = await events(tabB, 'conflict');
    assert.equal(conflict.status, 412);
    assert.deepEqual(conflict.local, { by: 'B', n: 1 });
    assert.deepEqual(conflict.server, { by: 'A', n: 2 });
    assert.equal(conflict.serverId, a2);
    assert.equal(await tabB.evaluate(() => window.client.status), 'conflict');
    assert.deepEqual(states(await history(srv, 'tabs')), [{ by: 'A', n: 1 }, { by: 'A', n: 2 }]);

    // Paused: more edits in B are held back, also when B is hidden (a flush after the hide
    // resolves only once whatever the hide sent was answered): not even a request goes out.
    assert.equal(await answered(srv, 'POST', 412), 1);
    await tabB.evaluate(() => window.edit({ by: 'B', n: 2 }));
    assert.equal(await tabB.evaluate(() => window.client.flush()), null);
    await tabB.evaluate(() => (window.dispatchEvent(new Event('pagehide')), window.client.flush()));
    assert.equal(await answered(srv, 'POST', 412), 1, 'nothing sent while paused');
    assert.equal((await history(srv, 'tabs')).length, 2);
    assert.deepEqual(await tabB.evaluate(() => window.client.conflict.local), { by: 'B', n: 2 });

    // B merges: saved on top of A's latest.
    const merged = { by: 'A+B', n: 3 };
    const id = await tabB.evaluate((m) => window.client.resolve(m), merged);
    assert.ok(id);
    assert.deepEqual(states(await history(srv, 'tabs')), [{ by: 'A', n: 1 }, { by: 'A', n: 2 }, merged]);

    // Now A is behind: its next save is a conflict too; it takes the server's state.
    assert.equal(await flushEdit(tabA, { by: 'A', n: 4 }), null);
    const [conflictA] = await events(tabA, 'conflict');
    assert.deepEqual(conflictA.server, merged);
    assert.deepEqual(await tabA.evaluate(() => window.client.adopt()), merged);
    assert.ok(await flushEdit(tabA, { by: 'A', n: 5 }));
    assert.deepEqual(states(await history(srv, 'tabs')),
      [{ by: 'A', n: 1 }, { by: 'A', n: 2 }, merged, { by: 'A', n: 5 }]);
    assert.deepEqual([...tabA.errors, ...tabB.errors], []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('3c. two tabs save while the server is away: one lands, the other gets the conflict', { timeout: TIMEOUT }, async () => {
  let srv = await server();
  const { port, dataDir } = srv;
  const context = await browser.newContext();
  try {
    const options = NO_RETRY;
    const start = { doc: 'start' };
    const tabA = await openApp(context, srv, 'offline-tabs', { options });
    assert.ok(await flushEdit(tabA, start));
    const tabB = await openApp(context, srv, 'offline-tabs', { options }); // knows start

    await srv.stop();
    assert.equal(await flushEdit(tabA, { doc: 'A' }), null, 'queued');
    assert.equal(await flushEdit(tabB, { doc: 'B' }), null, 'queued');
    assert.equal(await queueLength(tabA), 2, "both tabs' saves wait in the one IndexedDB queue");

    srv = await server({ port, dataDir });
    // B comes back first: it sends its own save, not A's (A is open, and sends its own).
    await online(tabB);
    assert.deepEqual(states(await history(srv, 'offline-tabs')), [start, { doc: 'B' }], 'only B');
    assert.equal(await online(tabA), null, 'A is paused');
    const [conflict] = await events(tabA, 'conflict');
    assert.equal(conflict.status, 412);
    assert.deepEqual(conflict.local, { doc: 'A' }, "A's state, not sent");
    assert.deepEqual(conflict.server, { doc: 'B' }, "B's, which landed first");
    assert.deepEqual(await events(tabB, 'conflict'), []);
    // Nothing overwritten silently: exactly one of the two on top of the start.
    assert.deepEqual(states(await history(srv, 'offline-tabs')), [start, { doc: 'B' }]);
    assert.equal(await queueLength(tabA), 1, "A's save keeps its place while A decides");

    // A merges; B's state stays under the merge, and the queue is empty.
    const merged = { doc: 'A+B' };
    assert.ok(await tabA.evaluate((m) => window.client.resolve(m), merged));
    assert.deepEqual(states(await history(srv, 'offline-tabs')), [start, { doc: 'B' }, merged]);
    assert.equal(await queueLength(tabA), 0);
    assert.deepEqual([...tabA.errors, ...tabB.errors], []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('3d. a closed tab\'s queued save in conflict: the tab that sends it raises the conflict; adopt() keeps other tabs\' saves', { timeout: TIMEOUT }, async () => {
  let srv = await server();
  const { port, dataDir } = srv;
  const context = await browser.newContext();
  try {
    const options = NO_RETRY;
    const start = { doc: 'start' };
    const tabA = await openApp(context, srv, 'closed-tab', { options });
    assert.ok(await flushEdit(tabA, start));
    const tabB = await openApp(context, srv, 'closed-tab', { options });
    const tabC = await openApp(context, srv, 'closed-tab', { options });

    await srv.stop();
    assert.equal(await flushEdit(tabA, { doc: 'A' }), null);
    assert.equal(await flushEdit(tabB, { doc: 'B' }), null);
    assert.equal(await flushEdit(tabC, { doc: 'C' }), null);
    await tabB.close(); // B's save is nobody's now
    srv = await server({ port, dataDir });

    // A sends its own save, then B's on top of start, which no longer is the latest.
    assert.equal(await online(tabA), null, 'paused');
    const [conflict] = await events(tabA, 'conflict');
    assert.deepEqual(conflict.local, { doc: 'B' }, "the closed tab's state");
    assert.deepEqual(conflict.server, { doc: 'A' });
    assert.deepEqual(states(await history(srv, 'closed-tab')), [start, { doc: 'A' }]);
    assert.equal(await queueLength(tabA), 2, "B's and C's saves");

    // A takes the server's side: B's save goes, C's (its tab is open) stays and meets A's.
    assert.deepEqual(await tabA.evaluate(() => window.client.adopt()), { doc: 'A' });
    assert.equal(await queueLength(tabA), 1);
    assert.equal(await online(tabC), null, 'paused');
    const [conflictC] = await events(tabC, 'conflict');
    assert.deepEqual(conflictC.local, { doc: 'C' });
    assert.deepEqual(conflictC.server, { doc: 'A' });
    assert.deepEqual(states(await history(srv, 'closed-tab')), [start, { doc: 'A' }]);
    assert.deepEqual([...tabA.errors, ...tabC.errors], []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('3b. onConflict merges by itself', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const seeded = await fetch(`${srv.url}/merge`, { method: 'POST', body: '{"other":"device"}',
      headers: { 'Content-Type': 'application/json' } });
    assert.equal(seeded.status, 201);
    const page = await context.newPage();
    // This browser has local state and has never seen the session: If-None-Match: * fails.
    await page.goto(`${app.origin}/blank.html`);
    await page.evaluate(async (server) => {
      const { connect } = await import(server + '/snapkeep.js');
      // As the README has it: the merge goes into the app's own state, then it is saved.
      window.local = { mine: 'laptop' };
      window.client = connect({ url: server + '/api/backup', session: 'merge', debounceMs: 60000,
        onConflict: ({ server }) => (window.local = { ...server, ...window.local }) });
      window.client.save(window.local);
      await window.client.flush();
    }, srv.origin);
    await eventually(async () => (await history(srv, 'merge')).length === 2, { what: 'the merge' });
    assert.deepEqual(states(await history(srv, 'merge')), [{ other: 'device' }, { other: 'device', mine: 'laptop' }]);
    // The app's next edit starts from the merge: the other device's change stays.
    assert.ok(await page.evaluate(() => (window.client.save({ ...window.local, mine: 'edited' }), window.client.flush())));
    assert.deepEqual(states(await history(srv, 'merge')).at(-1), { other: 'device', mine: 'edited' });

    // A latest edited by hand into something that is not JSON: a conflict carrying its text.
    const [last] = onDisk(srv, 'merge').slice(-1);
    writeFileSync(join(srv.dataDir, 'merge', `${last.id}.json`), 'not json {');
    const phone = await (await browser.newContext()).newPage(); // a browser that never saw it
    await phone.goto(`${app.origin}/blank.html`);
    const conflict = await phone.evaluate(async (server) => {
      const { connect } = await import(server + '/snapkeep.js');
      const other = connect({ url: server + '/api/backup', session: 'merge', debounceMs: 60000 });
      other.save({ mine: 'phone' });
      const id = await other.flush();
      return { id, conflict: other.conflict };
    }, srv.origin);
    assert.equal(conflict.id, null);
    assert.equal(conflict.conflict.server, 'not json {');
    assert.deepEqual(conflict.conflict.local, { mine: 'phone' }, 'the state is kept');
    await phone.context().close();
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('4. closing the page sends the last state before its debounce ran out', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const options = { debounceMs: 60000 };
    const latest = async (session) => (await history(srv, session)).at(-1)?.state;

    // Never saved before: the first request this page makes is on its way out (preflight too).
    let page = await openApp(context, srv, 'close', { options, query: '&spy' });
    await page.evaluate(() => window.edit({ n: 1 }));
    await page.close({ runBeforeUnload: true });
    await eventually(async () => (await latest('close'))?.n === 1, { what: 'the state sent on close' });
    const [sent] = await spied(context);
    assert.deepEqual(sent, { via: 'fetch', keepalive: true,
      headers: { 'Content-Type': 'application/json', 'Snapkeep-If-None-Match': '*' } });

    // After saves, conditional on the last one.
    page = await openApp(context, srv, 'close', { options });
    assert.ok(await page.evaluate(() => (window.edit({ n: 2 }), window.client.flush())));
    await page.evaluate(() => window.edit({ n: 3 }));
    await page.close({ runBeforeUnload: true });
    await eventually(async () => (await latest('close'))?.n === 3, { what: 'the state sent on close' });

    // Navigating away does the same; this page never read the answer to the last one, and
    // finds out at load that it was saved (else this send's If-Match would be refused).
    page = await openApp(context, srv, 'close', { options });
    await page.evaluate(() => window.edit({ n: 4 }));
    await page.goto(`${app.origin}/blank.html`);
    await eventually(async () => (await latest('close'))?.n === 4, { what: 'the state sent on navigation' });
    assert.deepEqual(states(await history(srv, 'close')).map((s) => s.n), [1, 2, 3, 4]);
    await page.close();

    // The send on close carries If-Match: another device's newer state is not overwritten.
    page = await openApp(context, srv, 'close', { options });
    const [base] = (await history(srv, 'close')).slice(-1);
    const other = await fetch(`${srv.url}/close`, { method: 'POST', body: '{"other":"device"}',
      headers: { 'Content-Type': 'application/json', 'If-Match': `"${base.id}"` } });
    assert.equal(other.status, 201);
    assert.equal(await answered(srv, 'POST', 412), 0);
    await page.evaluate(() => window.edit({ n: 5 }));
    await page.close({ runBeforeUnload: true });
    await eventually(async () => (await answered(srv, 'POST', 412)) >= 1, { what: 'the refusal' });
    assert.equal(await answered(srv, 'POST', 412), 1);
    assert.deepEqual(await latest('close'), { other: 'device' });
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('4c. hidden while a save is on its way: the last state waits its turn, nothing goes back', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    // `late`: the save reaches the server late; `slow`: its answer comes back late.
    for (const mode of ['late', 'slow']) {
      const session = `race-${mode}`;
      const page = await openApp(context, srv, session, { options: { debounceMs: 60000 } });
      const v = (n) => ({ v: n });
      assert.ok(await page.evaluate((s) => (window.edit(s), window.client.flush()), v(0)));
      let first = true;
      await page.route(`**/api/backup/${session}`, async (route) => {
        if (route.request().method() !== 'POST' || !first) return route.continue();
        first = false;
        if (mode === 'late') {
          await new Promise((resolve) => setTimeout(resolve, 1000));
          return route.continue();
        }
        const response = await route.fetch();
        await new Promise((resolve) => setTimeout(resolve, 1000));
        return route.fulfill({ response });
      });
      await page.evaluate((s) => (window.edit(s), void window.client.flush()), v(1));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await page.evaluate((s) => (window.edit(s), window.dispatchEvent(new Event('pagehide'))), v(2));
      await eventually(async () => (await history(srv, session)).length === 3, { what: 'the hidden state' });
      assert.deepEqual(states(await history(srv, session)), [0, 1, 2].map(v), `${mode}: in order`);
      // The base is the newest: the next save goes on top of v2, no conflict.
      assert.ok(await page.evaluate((s) => (window.edit(s), window.client.flush()), v(3)));
      assert.deepEqual(states(await history(srv, session)), [0, 1, 2, 3].map(v), mode);
      assert.deepEqual(await events(page, 'conflict'), [], mode);
      assert.deepEqual(await events(page, 'error'), [], mode);
      assert.deepEqual(page.errors, []);
      await page.close();
    }
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('4b. a browser without fetch keepalive: the last state goes by sendBeacon', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const query = '&nokeepalive&spy';
    const page = await openApp(context, srv, 'beacon', { options: { debounceMs: 60000 }, query });
    await page.evaluate(() => window.edit({ by: 'beacon' }));
    await page.close({ runBeforeUnload: true });
    await eventually(async () => (await history(srv, 'beacon')).length === 1, { what: 'the beacon' });
    assert.deepEqual(states(await history(srv, 'beacon')), [{ by: 'beacon' }]);
    // A string: sendBeacon sends it as text/plain;charset=UTF-8, which the server takes.
    assert.deepEqual(await spied(context), [{ via: 'sendBeacon', body: 'string' }]);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('5. mirrorLocalStorage: keys backed up as one readable document, put back on an empty browser', { timeout: TIMEOUT }, async () => {
  const srv = await server();
  const context = await browser.newContext();
  try {
    const options = { debounceMs: 100 };
    const page = await openApp(context, srv, 'mirror', { options, query: '&mode=mirror' });
    assert.equal(await page.evaluate(() => window.restored), false);
    const latest = async () => (await history(srv, 'mirror')).at(-1)?.state;

    // The app writes its keys and calls sync(); keys it does not name stay out.
    await page.evaluate(() => {
      localStorage.setItem('todos', '["milk"]');
      localStorage.setItem('theme', 'dark');
      localStorage.setItem('unrelated', 'not backed up');
      window.mirror.sync();
    });
    await eventually(async () => (await latest())?.localStorageText?.theme === 'dark', { what: 'sync()' });
    // A value that is JSON is stored as JSON; any other as its text.
    assert.deepEqual(await latest(), { localStorage: { todos: ['milk'] }, localStorageText: { theme: 'dark' } });

    // Another tab changes a key: the storage event saves it.
    const other = await context.newPage();
    await other.goto(`${app.origin}/blank.html`);
    await other.evaluate(() => localStorage.setItem('theme', 'light'));
    await eventually(async () => (await latest())?.localStorageText?.theme === 'light', { what: 'the storage event' });

    // A change nobody synced still goes out when the page is hidden.
    await page.evaluate(() => localStorage.setItem('todos', '["milk","eggs"]'));
    await page.evaluate(() => window.dispatchEvent(new Event('pagehide')));
    await eventually(async () => (await latest())?.localStorage?.todos?.length === 2, { what: 'the hide' });
    assert.deepEqual(await latest(), { localStorage: { todos: ['milk', 'eggs'] }, localStorageText: { theme: 'light' } });
    const backup = { todos: '["milk","eggs"]', theme: 'light' };
    const count = (await history(srv, 'mirror')).length;

    await other.close();
    await clearSiteData(page);
    await page.reload();
    await page.waitForFunction(() => window.ready === true);
    assert.equal(await page.evaluate(() => window.restored), true);
    assert.deepEqual(await page.evaluate(() => ({ ...localStorage })), backup);
    await page.evaluate(() => window.client.flush());
    assert.equal((await history(srv, 'mirror')).length, count, 'the restore is not saved again');
    await screenshot(page, 'client-mirror-restored');
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('6. session tokens: saves carry the token, and so does the send on close', { timeout: TIMEOUT }, async () => {
  const env = { SNAPKEEP_SIGNING_KEY: SIGNING_KEY };
  const srv = await server({ env });
  const context = await browser.newContext();
  try {
    const token = execFileSync(process.env.SNAPKEEP_BIN, ['token', 'tokened', '--ttl', '1h'],
      { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' }).trim();
    const auth = { Authorization: `Bearer ${token}` };
    assert.equal((await fetch(`${srv.url}/tokened`)).status, 401, 'the server wants a token');

    const options = { token, debounceMs: 60000 };
    let page = await openApp(context, srv, 'tokened', { options, query: '&spy' });
    assert.ok(await page.evaluate(() => (window.edit({ n: 1 }), window.client.flush())));
    await page.evaluate(() => window.edit({ n: 2 }));
    await page.close({ runBeforeUnload: true });
    const [, onClose] = await spied(context);
    assert.equal(onClose.keepalive, true);
    assert.equal(onClose.headers.Authorization, `Bearer ${token}`);
    await eventually(async () => (await history(srv, 'tokened', auth)).length === 2, { what: 'the send on close' });
    assert.deepEqual(states(await history(srv, 'tokened', auth)), [{ n: 1 }, { n: 2 }]);

    // A token as a function (one the app refreshes), and a wrong one: 401, reported, dropped.
    page = await context.newPage();
    await page.goto(`${app.origin}/blank.html`);
    const outcome = await page.evaluate(async ({ server, token }) => {
      const { connect } = await import(server + '/snapkeep.js');
      const good = connect({ url: server + '/api/backup', session: 'tokened', token: async () => token });
      const latest = await good.latest();
      const bad = connect({ url: server + '/api/backup', session: 'tokened', token: token.replace(/.$/, (c) => (c === '0' ? '1' : '0')), retryMs: 10 });
      const errors = [];
      bad.on('error', (e) => errors.push(e));
      bad.save({ n: 'forged' });
      const id = await bad.flush();
      return { latest: latest.state, id, errors: errors.map((e) => ({ ...e })), queued: bad.queued };
    }, { server: srv.origin, token });
    assert.deepEqual(outcome.latest, { n: 2 });
    assert.equal(outcome.id, null);
    assert.equal(outcome.errors.length, 1);
    assert.equal(outcome.errors[0].status, 401);
    assert.equal(outcome.errors[0].code, 'unauthorized');
    assert.deepEqual(outcome.errors[0].state, { n: 'forged' }, 'the state comes back to the app');
    assert.equal(outcome.errors[0].queued, 1);
    assert.equal(outcome.queued, 1, 'kept for a better token');
    assert.equal(await queueLength(page), 1);
    assert.equal((await history(srv, 'tokened', auth)).length, 2);
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('6b. a token that expires while saves wait: they stay queued, and go once it is refreshed', { timeout: TIMEOUT }, async () => {
  const env = { SNAPKEEP_SIGNING_KEY: SIGNING_KEY };
  let srv = await server({ env });
  const { port, dataDir } = srv;
  const context = await browser.newContext();
  try {
    const good = execFileSync(process.env.SNAPKEEP_BIN, ['token', 'expiring', '--ttl', '1h'],
      { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' }).trim();
    const auth = { Authorization: `Bearer ${good}` };
    const page = await context.newPage();
    await page.goto(`${app.origin}/blank.html`);
    await page.evaluate(async ({ server, good }) => {
      const { connect } = await import('/snapkeep.js');
      window.token = good;
      window.client = connect({ url: server + '/api/backup', session: 'expiring', debounceMs: 60000,
        retryMs: 60000, maxRetryMs: 60000, token: () => window.token });
      window.errors = [];
      window.client.on('error', (e) => window.errors.push(e));
      window.client.save({ n: 0 });
      await window.client.flush();
    }, { server: srv.origin, good });
    await srv.stop();
    for (const n of [1, 2, 3]) {
      assert.equal(await page.evaluate((n) => (window.client.save({ n }), window.client.flush()), n), null);
    }
    assert.equal(await queueLength(page), 3);
    srv = await server({ port, dataDir, env });
    // The token expired meanwhile: 401, reported once, and the queue stays whole.
    await page.evaluate(() => (window.token = 'expired', window.dispatchEvent(new Event('online'))));
    await eventually(() => page.evaluate(() => window.errors.length > 0), { what: 'the 401' });
    assert.equal(await page.evaluate(() => window.client.flush()), null, 'still refused');
    const errors = await page.evaluate(() => window.errors);
    assert.equal(errors.length, 2);
    assert.deepEqual(errors.map((e) => e.status), [401, 401]);
    assert.deepEqual(errors[0].state, { n: 1 }, 'the oldest, refused and kept');
    assert.equal(await queueLength(page), 3);
    // Refreshed: the queue goes, in order.
    await page.evaluate((good) => (window.token = good), good);
    assert.ok(await page.evaluate(() => window.client.flush()));
    assert.equal(await queueLength(page), 0);
    assert.deepEqual(states(await history(srv, 'expiring', auth)), [0, 1, 2, 3].map((n) => ({ n })));
  } finally {
    await context.close();
    await srv.stop();
  }
});

test('7. 413: an error event with the state, not retried, and later saves go on', { timeout: TIMEOUT }, async () => {
  const srv = await server({ env: { SNAPKEEP_MAX_BODY_BYTES: '2000' } });
  const context = await browser.newContext();
  try {
    for (const gzip of [true, false]) {
      const session = `big-${gzip}`;
      const options = { debounceMs: 60000, retryMs: 10, maxRetryMs: 10, gzip };
      const page = await openApp(context, srv, session, { options });
      const posts = [];
      page.on('request', (request) => request.method() === 'POST' && posts.push(request));

      assert.ok(await flushEdit(page, { n: 1 }));
      // Random text: gzip cannot bring it under the limit, and unzipped it is refused early.
      const big = { n: 2, blob: randomBytes(3000).toString('base64') };
      assert.equal(await flushEdit(page, big), null);
      const [error] = await events(page, 'error');
      assert.equal(error.status, 413, JSON.stringify(error));
      assert.equal(error.code, 'body_too_large');
      assert.deepEqual(error.state, big);
      assert.equal(await queueLength(page), 0, 'dropped, not queued');

      assert.ok(await flushEdit(page, { n: 3 }));
      assert.deepEqual(states(await history(srv, session)), [{ n: 1 }, { n: 3 }]);
      assert.equal(posts.length, 3, 'the big one was sent once');
      assert.equal(await posts[1].headerValue('content-encoding'), gzip ? 'gzip' : null);
      assert.deepEqual(await events(page, 'offline'), []);
      await page.close();
    }
    const metrics = await (await fetch(`${srv.origin}/metrics`)).text();
    assert.match(metrics, /snapkeep_requests_rejected_total\{reason="body_too_large"\} 2\b/);
  } finally {
    await context.close();
    await srv.stop();
  }
});

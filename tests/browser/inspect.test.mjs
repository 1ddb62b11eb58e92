// The inspection page (client/inspect.html), as the binary serves it at `/` and `{base}/_ui`,
// in Debian's headless Chromium against the real server: sessions, a timeline, a snapshot, a
// diff, a download, the operator token, "Make this the latest", read-only mode, and content
// that looks like HTML staying text.
//
// SNAPKEEP_BIN=$PWD/target/debug/snapkeep node --test --test-concurrency=1 tests/browser/inspect.test.mjs
// Screenshots go to tests/browser/screenshots/inspect-*.png; with SNAPKEEP_UPDATE_DOCS=1 the
// README's picture, docs/inspect.png, is taken again too.

import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BASE, HERE, eventually, launchBrowser, screenshot, startServer, tempDir } from './support.mjs';

const DOCS = join(HERE, '..', '..', 'docs');
const OPERATOR = 'operator-token-of-the-inspection-tests';
const SIGNING_KEY = 'signing-key-of-the-inspection-tests';

/** A session token, minted the way docs/security.md shows. */
function mint(session, ttlSeconds = 3600) {
  const payload = `${session}:${Math.floor(Date.now() / 1000) + ttlSeconds}`;
  return `${payload}:${createHmac('sha256', SIGNING_KEY).update(payload).digest('hex')}`;
}

// ---- Helpers: HTTP from Node, and pages that record what goes wrong in them -----------------

const bearer = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

/** POSTs `text` as a snapshot of `session`; returns the parsed answer (asserting 201). */
async function save(server, session, text, token) {
  const response = await fetch(`${server.url}/${session}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...bearer(token) },
    body: text,
  });
  assert.equal(response.status, 201, `saving to ${session}: ${await response.clone().text()}`);
  return response.json();
}

/** The session's snapshot ids, newest first. */
async function ids(server, session, token) {
  const response = await fetch(`${server.url}/${session}`, { headers: bearer(token) });
  assert.equal(response.status, 200);
  return (await response.json()).snapshots.map((s) => s.id);
}

async function bytesOf(server, session, id, token) {
  const response = await fetch(`${server.url}/${session}/${id}`, { headers: bearer(token) });
  assert.equal(response.status, 200);
  return Buffer.from(await response.arrayBuffer());
}

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

/** Every file under the data directory, with its content: to show nothing was written. */
function filesIn(dir) {
  const files = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath ?? entry.path, entry.name);
      files[path] = readFileSync(path, 'utf8');
    }
  }
  return files;
}

/**
 * Opens `url` in a new page of `browser`. The page records uncaught errors and console errors
 * (a CSP violation is one); `problems()` returns them, leaving out the browser's own line for
 * each non-2xx answer, which the page handles on purpose (401 for a wrong token, and so on).
 */
async function openPage(browser, url, { viewport = { width: 1200, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${message.text()}`);
    }
  });
  page.on('dialog', (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    dialog.dismiss();
  });
  page.problems = () => problems;
  if (url) await page.goto(url);
  return page;
}

/** The rows of the diff table: [kind, path, values]. */
const diffRows = (page) =>
  page.$$eval('#diff tr', (rows) => rows.map((row) => [...row.cells].map((cell) => cell.innerText.trim())));

/** The tree's text, one trimmed line per line: it should read as pretty-printed JSON. */
const treeLines = (page) =>
  page.$eval('#content .tree', (tree) => tree.innerText.split('\n').map((l) => l.trim()).filter(Boolean));

const prettyLines = (text) => JSON.stringify(JSON.parse(text), null, 2).split('\n').map((l) => l.trim());

const waitHash = (page, hash) =>
  eventually(async () => (await page.evaluate(() => location.hash)) === hash, { what: `hash ${hash}` });

// ---- What the tests save ------------------------------------------------------------------------

// Three versions of a to-do app's state. The first is written with odd spacing and non-ASCII,
// so that "the exact bytes" means something; the last has a number a double cannot hold.
const TODO = [
  '{ "todos": ["milk", "eggs"],\n  "user": {"name": "Ann", "age": 31}, "old": true, "note": "café ✓" }\n',
  '{"todos":["milk","eggs","bread"],"user":{"name":"Ann","age":31},"old":true,"note":"café ✓"}',
  '{"todos":["milk","eggs","bread","jam"],"user":{"name":"Bob","age":31},"note":"café ✓",' +
    '"settings":{"theme":"dark","sync":{"every":30,"devices":["laptop","phone"]}},"big":123456789012345678901234567890}',
];

/** Seeds todo-ann (3 snapshots), todo-bob (2) and notes-7f3a (1); returns what was saved. */
async function seed(server, token) {
  const saved = { 'todo-ann': [], 'todo-bob': [], 'notes-7f3a': [] };
  for (const text of TODO) saved['todo-ann'].push({ text, ...(await save(server, 'todo-ann', text, token)) });
  for (const text of ['{"todos":[]}', '{"todos":["call mum"]}']) {
    saved['todo-bob'].push({ text, ...(await save(server, 'todo-bob', text, token)) });
  }
  const note = '{"notes":[{"title":"Ideas","body":"a backup server"}]}';
  saved['notes-7f3a'].push({ text: note, ...(await save(server, 'notes-7f3a', note, token)) });
  return saved;
}

const totalBytes = (list) => list.reduce((sum, s) => sum + Buffer.byteLength(s.text), 0);

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

// ---- An open server (no token) ----------------------------------------------------------------

describe('an open server', () => {
  let server;
  let saved;
  before(async () => {
    server = await startServer();
    saved = await seed(server);
  });
  after(async () => server?.stop());

  test('lists sessions, shows a timeline, a snapshot, a diff, and downloads the exact bytes', async () => {
    const page = await openPage(browser, `${server.origin}/`);

    // The sessions, sorted, with their counts, sizes and newest time.
    await page.waitForSelector('#sessions a.item');
    const sessions = await page.$$eval('#sessions a.item', (links) =>
      links.map((a) => [a.dataset.session, a.innerText.replace(/\s+/g, ' ').trim()]));
    assert.deepEqual(sessions.map(([name]) => name), ['notes-7f3a', 'todo-ann', 'todo-bob']);
    for (const [name, text] of sessions) {
      const count = saved[name].length;
      assert.match(text, new RegExp(`${count} snapshots? · ${totalBytes(saved[name])} B`), text);
      assert.match(text, /newest just now/, text);
    }
    await screenshot(page, 'inspect-sessions');

    // A session's timeline: newest first, the newest marked as the latest.
    await page.click('#sessions a[data-session="todo-ann"]');
    await waitHash(page, '#/s/todo-ann');
    await page.waitForSelector('#snapshots li.snap');
    const expected = await ids(server, 'todo-ann');
    assert.deepEqual(await page.$$eval('#snapshots li.snap', (rows) => rows.map((r) => r.dataset.id)), expected);
    assert.match(await page.innerText(`#snapshots li[data-id="${expected[0]}"]`), /latest/);
    assert.doesNotMatch(await page.innerText(`#snapshots li[data-id="${expected[1]}"]`), /latest/);
    const [newest, middle, oldest] = saved['todo-ann'].map((s) => s.id).reverse();
    assert.deepEqual(expected, [newest, middle, oldest]);

    // One snapshot: pretty-printed JSON, its size and its SHA-256.
    await page.click(`#snapshots li[data-id="${oldest}"] a`);
    await waitHash(page, `#/s/todo-ann/${oldest}`);
    await page.waitForSelector('#content .tree');
    assert.deepEqual(await treeLines(page), prettyLines(TODO[0]));
    const size = Buffer.byteLength(TODO[0]);
    assert.match(await page.innerText('#snapshot-size'), new RegExp(`\\b${size} bytes\\b`));
    assert.equal(await page.innerText('#sha256'), sha256(TODO[0]));
    assert.match(await page.innerText('#snapshot-digest'), /matches its id[\s\S]*intact/);
    await screenshot(page, 'inspect-snapshot');

    // Tick a second snapshot: the newer one is shown, with what changed since the older.
    await page.check(`#snapshots li[data-id="${newest}"] input`);
    await waitHash(page, `#/s/todo-ann/${newest}/vs/${oldest}`);
    await page.waitForSelector('#diff tr');
    const expectedRows = [
      ['changed', '$.user.name', '"Ann" → "Bob"'],
      ['removed', '$.old', 'true'],
      ['added', '$.todos[2]', '"bread"'],
      ['added', '$.todos[3]', '"jam"'],
      ['added', '$.settings', '{"theme":"dark","sync":{"every":30,"devices":["laptop","phone"]}}'],
      ['added', '$.big', '123456789012345678901234567890'],
    ];
    const sorted = (rows) => [...rows].sort((a, b) => a.join().localeCompare(b.join()));
    assert.deepEqual(sorted(await diffRows(page)), sorted(expectedRows));
    assert.equal(await page.innerText('#diff-summary'), '1 changed · 4 added · 1 removed');
    // The shown snapshot's digits survive (JSON.parse alone would print 1.2345678901234568e+29).
    assert.deepEqual(await treeLines(page), prettyLines(TODO[2]).map((line) =>
      line.replace('1.2345678901234568e+29', '123456789012345678901234567890')));
    assert.equal(await page.$$eval('#snapshots input:checked', (boxes) => boxes.length), 2);
    await screenshot(page, 'inspect-diff');
    if (process.env.SNAPKEEP_UPDATE_DOCS) {
      // The README's picture: SNAPKEEP_UPDATE_DOCS=1 to write it again (otherwise every run
      // would change a committed file, its times being different).
      mkdirSync(DOCS, { recursive: true });
      await page.screenshot({ path: join(DOCS, 'inspect.png') });
    }

    // The hash is the state: a reload shows the same, and back goes to the single snapshot.
    await page.reload();
    await page.waitForSelector('#diff tr');
    assert.deepEqual(sorted(await diffRows(page)), sorted(expectedRows));
    await page.goBack();
    await waitHash(page, `#/s/todo-ann/${oldest}`);
    await page.waitForSelector('#content .tree');
    assert.equal(await page.locator('#diff').count(), 0);
    assert.equal(await page.innerText('#snapshot-id'), oldest);

    // Download: the exact bytes as stored, named <session>-<id>.json.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert.equal(download.suggestedFilename(), `todo-ann-${oldest}.json`);
    const file = readFileSync(await download.path());
    assert.ok(file.equals(Buffer.from(TODO[0])), `downloaded: ${JSON.stringify(file.toString())}`);
    assert.ok(file.equals(await bytesOf(server, 'todo-ann', oldest)));

    // Untick both: back to the timeline alone.
    await page.uncheck(`#snapshots li[data-id="${oldest}"] input`);
    await waitHash(page, '#/s/todo-ann');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('is served at {base}/_ui too, and a hash opens a session directly', async () => {
    const page = await openPage(browser, `${server.url}/_ui#/s/todo-bob`);
    await page.waitForSelector('#snapshots li.snap');
    assert.equal(await page.locator('#snapshots li.snap').count(), 2);
    const listed = await page.$$eval('#sessions a.item', (as) => as.map((a) => a.dataset.session));
    for (const name of Object.keys(saved)) assert.ok(listed.includes(name), `${name} in ${listed}`);
    assert.ok(await page.locator('#sessions li.selected a[data-session="todo-bob"]').isVisible());
    // The filter narrows the list; Enter opens the session with exactly the id typed.
    await page.fill('#session-filter', 'BOB');
    assert.deepEqual(await page.$$eval('#sessions a.item', (as) => as.map((a) => a.dataset.session)), ['todo-bob']);
    await page.fill('#session-filter', 'notes-7f3a');
    await page.press('#session-filter', 'Enter');
    await waitHash(page, '#/s/notes-7f3a');
    await eventually(async () => (await page.$$eval('#snapshots li.snap', (r) => r.map((x) => x.dataset.id)))
      .join() === saved['notes-7f3a'].map((s) => s.id).join(), { what: 'the notes timeline' });
    const page2 = await fetch(`${server.url}/_ui`);
    assert.equal(page2.status, 200);
    assert.match(page2.headers.get('content-type'), /^text\/html/);
    const html = await page2.text();
    assert.ok(html.includes(`<meta name="snapkeep-base" content="${BASE}">`), 'the base path is written in');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('HTML-looking keys and values are shown as text, never run', async () => {
    const payload = (n) => `<img src=x onerror="window.__pwned=${n}">`;
    const first = JSON.stringify({
      [payload(1)]: `<script>window.__pwned=2</script>`,
      list: [payload(3), '<b>bold</b>'],
    });
    const second = JSON.stringify({
      [payload(1)]: `</span><svg onload="window.__pwned=4">`,
      list: [payload(3)],
      '<svg onload=window.__pwned=5>': { '"><img src=x onerror=window.__pwned=6>': 1 },
    });
    const a = await save(server, 'xss', first);
    const b = await save(server, 'xss', second);
    const page = await openPage(browser, `${server.origin}/#/s/xss/${b.id}/vs/${a.id}`);
    await page.waitForSelector('#diff tr');
    await page.waitForSelector('#content .tree');
    const paths = await page.$$eval('#diff td.path', (cells) => cells.map((c) => c.innerText));
    assert.deepEqual(paths.sort(), [
      `$[${JSON.stringify(payload(1))}]`,
      '$.list[1]',
      '$["<svg onload=window.__pwned=5>"]',
    ].sort());
    assert.deepEqual(await treeLines(page), prettyLines(second));
    const stored = page.locator('button', { hasText: 'Stored text' });
    await stored.click();
    assert.equal(await page.innerText('#content pre.stored'), second);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    await screenshot(page, 'inspect-xss');

    // A session id from the hash that snapkeep refuses is echoed as text as well.
    await page.evaluate(() => { location.hash = '#/s/<img src=x onerror=window.__pwned=7>'; });
    await page.waitForSelector('#timeline .error-box');
    assert.match(await page.innerText('#timeline .error-box'), /<img src=x onerror=window.__pwned=7>/);

    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.locator('#panes img, #panes script, #panes svg, #panes b').count(), 0);
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('a big snapshot opens its first levels only, and the diff finds one change in it', async () => {
    const items = (changed) => Array.from({ length: 5000 }, (_, i) => ({
      id: i,
      name: i === 1234 && changed ? 'renamed' : `item ${i}`,
      tags: ['a', 'b', 'c'],
      deep: { deeper: { deepest: { value: i } } },
      text: 'x'.repeat(200),
    }));
    const one = JSON.stringify({ items: items(false), meta: { count: 5000 } });
    const two = JSON.stringify({ items: items(true), meta: { count: 5000 } });
    assert.ok(one.length > 1_000_000);
    const a = await save(server, 'big', one);
    const b = await save(server, 'big', two);
    const page = await openPage(browser, `${server.origin}/#/s/big/${b.id}/vs/${a.id}`);
    await page.waitForSelector('#diff tr', { timeout: 20000 });
    assert.deepEqual(await diffRows(page), [['changed', '$.items[1234].name', '"item 1234" → "renamed"']]);
    await page.waitForSelector('#content .tree');
    // The first two levels are open (the root, "items", "meta"); each item is folded, and only
    // 200 of them are built.
    assert.deepEqual(await page.$$eval('#content details[open] > summary', (s) => s.map((x) => x.title)),
      ['$', '$.items', '$.meta']);
    assert.equal(await page.locator('#content .tree > details > .children > details:first-child > .children > details').count(), 200);
    assert.match(await page.innerText('#content .line.more'), /show 200 more \(4,800 not shown\)/);
    assert.match(await page.innerText('#content .tree > details > .children > details:first-child > .children > details:first-child > summary'),
      /^\{…5 keys\},$/);
    assert.equal(await page.innerText('#snapshot-size'), `${(two.length / 1048576).toFixed(1)} MiB (${two.length.toLocaleString('en')} bytes)`);
    await page.click('#content .line.more button');
    assert.equal(await page.locator('#content .tree > details > .children > details:first-child > .children > details').count(), 400);
    // Opening one item builds its children.
    await page.click('#content .tree > details > .children > details:first-child > .children > details:first-child > summary');
    await page.waitForSelector('#content .tree > details > .children > details:first-child > .children > details:first-child[open] .children .line');
    assert.match(await page.innerText('#content .tree > details > .children > details:first-child > .children > details:first-child'),
      /"name": "item 0",/);
    await screenshot(page, 'inspect-big');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('a snapshot edited by hand on disk is flagged', async () => {
    const { id } = await save(server, 'edited', '{"a":1}');
    writeFileSync(join(server.dataDir, 'edited', `${id}.json`), '{"a":2}');
    const page = await openPage(browser, `${server.origin}/#/s/edited/${id}`);
    await page.waitForSelector('#snapshot-digest');
    const digest = await page.innerText('#snapshot-digest');
    assert.match(digest, /does not match its id/);
    assert.match(digest, /no longer matches its id/);
    assert.deepEqual(await treeLines(page), ['{', '"a": 2', '}']);
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('restoring a damaged snapshot takes an explicit second yes, as the CLI wants --force', async () => {
    const { id: old } = await save(server, 'damaged', '{"a":1}');
    await save(server, 'damaged', '{"a":3}');
    writeFileSync(join(server.dataDir, 'damaged', `${old}.json`), '{"a":2}');
    const page = await openPage(browser, `${server.origin}/#/s/damaged/${old}`);
    await page.waitForSelector('#snapshot-digest');
    await page.click('#restore');
    const confirm = await page.innerText('#restore-confirm');
    assert.match(confirm, /no longer matches its id/);
    assert.match(confirm, /look intact from then on/);
    assert.equal(await page.innerText('#restore-yes'), 'Yes, restore the damaged bytes');
    await page.context().close();
  });

  test('times say which zone they are in', async () => {
    await save(server, 'zoned', '{"a":1}');
    const page = await openPage(browser, `${server.origin}/#/s/zoned`);
    await page.waitForSelector('#snapshots li.snap');
    const row = await page.innerText('#snapshots li.snap');
    assert.match(row, /\d{2}:\d{2}:\d{2}\.\d{3} UTC([+-]\d{2}:\d{2})?/, row);
    await page.context().close();
  });
});

// ---- The operator token -------------------------------------------------------------------------

describe('a server with an operator token', () => {
  let server;
  let saved;
  before(async () => {
    server = await startServer({ env: { SNAPKEEP_TOKEN: OPERATOR } });
    saved = await seed(server, OPERATOR);
  });
  after(async () => server?.stop());

  test('shows only the prompt until the right token, then sends it with every call', async () => {
    const page = await openPage(browser);
    const calls = [];
    page.on('request', (request) => {
      if (request.url().startsWith(`${server.url}/`)) calls.push([request.url(), request.headers().authorization]);
    });
    await page.goto(`${server.origin}/#/s/todo-ann`);
    await page.locator('#login').waitFor({ state: 'visible' });
    const hidden = async () => {
      const text = await page.innerText('body');
      for (const name of Object.keys(saved)) assert.ok(!text.includes(name), `${name} shows before the token`);
      assert.ok(await page.locator('#panes').isHidden());
    };
    await hidden();
    assert.deepEqual(calls.filter(([url]) => !url.endsWith('/_ui')), [], 'no data route called without a token');
    await screenshot(page, 'inspect-token-prompt');

    await page.fill('#token-input', 'not-the-operator-token-at-all');
    await page.press('#token-input', 'Enter');
    await eventually(async () => /refused that token \(401/.test(await page.innerText('#login-message')),
      { what: 'the wrong-token message' });
    await hidden();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
    await screenshot(page, 'inspect-token-wrong');

    await page.fill('#token-input', OPERATOR);
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('#sessions a.item');
    assert.deepEqual(await page.$$eval('#sessions a.item', (as) => as.map((a) => a.dataset.session)),
      ['notes-7f3a', 'todo-ann', 'todo-bob']);
    await page.waitForSelector('#snapshots li.snap');
    assert.equal(await page.locator('#snapshots li.snap').count(), 3);
    assert.ok(await page.locator('#login').isHidden());
    assert.deepEqual(await page.evaluate(() => Object.values(sessionStorage)), [OPERATOR]);

    // A reload in the same tab keeps the token.
    await page.reload();
    await page.waitForSelector('#snapshots li.snap');

    // Every call to a data route carried a token; after the prompt, the right one.
    const data = calls.filter(([url]) => !url.endsWith('/_ui'));
    assert.ok(data.length >= 3, JSON.stringify(data));
    for (const [url, authorization] of data) assert.ok(authorization, `${url} was called without a token`);
    const firstRight = data.findIndex(([, auth]) => auth === `Bearer ${OPERATOR}`);
    assert.ok(firstRight >= 0);
    for (const [url, authorization] of data.slice(firstRight)) {
      assert.equal(authorization, `Bearer ${OPERATOR}`, url);
    }

    // "Forget the token" goes back to the prompt and shows nothing.
    await page.click('#forget-token');
    await page.locator('#login').waitFor({ state: 'visible' });
    await hidden();
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('a crafted address never takes the token outside {base}', async () => {
    const page = await openPage(browser);
    const paths = [];
    page.on('request', (request) => paths.push(new URL(request.url()).pathname));
    await page.goto(`${server.url}/_ui`);
    await page.evaluate((t) => sessionStorage.setItem('snapkeep.inspect.token', t), OPERATOR);
    await page.reload();
    await page.waitForSelector('#sessions a.item');
    const crafted = [
      ['#/s/../other-service/..', /Not a session id: \.\./, '#timeline'],
      ['#/s/%2E%2E%2Fother-service', /Not a session id: \.\.\/other-service/, '#timeline'],
      ['#/s/todo-ann/../../../other', /Not a snapshot id: \.\./, '#detail'],
      [`#/s/todo-ann/${saved['todo-ann'][0].id}/vs/..%2F..%2Fx`, /Not a snapshot id: \.\.\/\.\.\/x/, '#detail'],
    ];
    for (const [hash, message, pane] of crafted) {
      await page.goto(`${server.url}/_ui${hash}`);
      await page.waitForSelector(`${pane} .error-box`);
      assert.match(await page.innerText(`${pane} .error-box`), message);
    }
    assert.ok(paths.length > 0);
    for (const path of paths) assert.ok(path === BASE || path.startsWith(`${BASE}/`), `${path} is outside ${BASE}`);
    assert.deepEqual(paths.filter((p) => /other|\.\./.test(p)), []);
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  test('"Make this the latest" posts the old bytes as a new snapshot, and a 412 is shown', async () => {
    const page = await openPage(browser);
    await page.goto(`${server.origin}/`);
    await page.evaluate((value) => sessionStorage.setItem('snapkeep.inspect.token', value), OPERATOR);
    const before1 = await ids(server, 'todo-ann', OPERATOR);
    const [newest, , oldest] = before1;
    await page.goto(`${server.origin}/#/s/todo-ann/${oldest}`);
    await page.reload(); // a hash change alone does not load the page again
    await page.waitForSelector('#content .tree');

    // The latest snapshot has no such button; an older one does, behind a confirmation.
    await page.click('#restore');
    await page.waitForSelector('#restore-confirm');
    await screenshot(page, 'inspect-restore-confirm');
    await page.click('#restore-yes');
    await eventually(async () => /Done: .* is a new snapshot/.test(await page.innerText('#message')),
      { what: 'the restore message' });
    const after1 = await ids(server, 'todo-ann', OPERATOR);
    assert.equal(after1.length, 4);
    assert.deepEqual(after1.slice(1), before1);
    const restored = await bytesOf(server, 'todo-ann', after1[0], OPERATOR);
    assert.ok(restored.equals(Buffer.from(TODO[0])), `restored: ${restored}`);
    // The page moved to the new snapshot, showing what the restore changed.
    await waitHash(page, `#/s/todo-ann/${after1[0]}/vs/${newest}`);
    await page.waitForSelector('#diff tr');
    assert.equal(await page.locator('#restore').count(), 0, 'the latest is not offered again');
    await screenshot(page, 'inspect-restored');

    // Someone saves while the page shows an older snapshot: the restore is refused, visibly.
    await page.goto(`${server.origin}/#/s/todo-ann/${newest}`);
    await page.waitForSelector('#restore');
    const meanwhile = await save(server, 'todo-ann', '{"todos":["from another tab"]}', OPERATOR);
    await page.click('#restore');
    await page.click('#restore-yes');
    await eventually(async () => /Not restored: someone saved todo-ann meanwhile/.test(await page.innerText('#message')),
      { what: 'the 412 message' });
    assert.match(await page.innerText('#message'), new RegExp(meanwhile.id));
    const after2 = await ids(server, 'todo-ann', OPERATOR);
    assert.deepEqual(after2, [meanwhile.id, ...after1], 'nothing but the other write');
    await eventually(async () => (await page.$$eval('#snapshots li.snap', (r) => r.map((x) => x.dataset.id)))[0] === meanwhile.id,
      { what: 'the timeline read again' });
    await screenshot(page, 'inspect-restore-412');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });
});

// ---- Read-only --------------------------------------------------------------------------------------

describe('a read-only server', () => {
  let server;
  let dataDir;
  before(async () => {
    dataDir = tempDir();
    const writer = await startServer({ dataDir });
    await seed(writer);
    await writer.stop();
    server = await startServer({ dataDir, env: { SNAPKEEP_READ_ONLY: 'true' } });
  });
  after(async () => server?.stop());

  test('offers no restore, and shows the refusal when a write is tried anyway', async () => {
    const files = filesIn(dataDir);
    const [, , oldest] = await ids(server, 'todo-ann');
    const page = await openPage(browser, `${server.origin}/#/s/todo-ann/${oldest}`);
    await page.waitForSelector('#content .tree');
    assert.ok(await page.locator('#read-only').isVisible());
    assert.equal(await page.locator('#restore').count(), 0);
    assert.match(await page.innerText('#snapshot'), /Read-only server: restoring is off/);
    await screenshot(page, 'inspect-read-only');

    // A page that believes the server writable (status answer altered on the way) still
    // cannot write: it shows snapkeep's refusal.
    await page.route((url) => url.href === server.url, async (route) => {
      const response = await route.fetch();
      route.fulfill({ response, json: { ...(await response.json()), readOnly: false } });
    });
    await page.reload();
    await page.click('#restore');
    await page.click('#restore-yes');
    await eventually(async () => /Not restored: snapkeep refused\..*\(503 read_only\)/.test(await page.innerText('#message')),
      { what: 'the read-only refusal' });
    assert.deepEqual(filesIn(dataDir), files, 'nothing was written');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });
});

// ---- Session tokens only ----------------------------------------------------------------------

describe('a server with session tokens only', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { SNAPKEEP_SIGNING_KEY: SIGNING_KEY } });
    await save(server, 'user-42', '{"theme":"dark"}', mint('user-42'));
    await save(server, 'user-43', '{"theme":"light"}', mint('user-43'));
  });
  after(async () => server?.stop());

  test('a session token opens its own session and nothing else', async () => {
    const page = await openPage(browser, `${server.origin}/`);
    await page.locator('#login').waitFor({ state: 'visible' });
    assert.match(await page.innerText('#login'), /session tokens only/);
    await page.fill('#token-input', mint('user-42'));
    await page.press('#token-input', 'Enter');
    await waitHash(page, '#/s/user-42');
    await page.waitForSelector('#snapshots li.snap');
    assert.match(await page.innerText('#sessions'), /A session token opens its own session only/);
    assert.deepEqual(await page.$$eval('#sessions a.item', (as) => as.map((a) => a.dataset.session)), ['user-42']);
    assert.ok(!(await page.innerText('body')).includes('user-43'));

    // Another session: refused (403), said in the pane, the token kept.
    await page.evaluate(() => { location.hash = '#/s/user-43'; });
    await page.waitForSelector('#timeline .error-box');
    assert.match(await page.innerText('#timeline .error-box'), /403 forbidden/);
    assert.ok(await page.locator('#panes').isVisible());
    await screenshot(page, 'inspect-session-token');
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });
});

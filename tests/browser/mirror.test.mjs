// The one-tag mirror (GET /snapkeep-mirror.js) on two third-party-style apps, each left as it
// is but for the tag added first in its <head>: one keeps its state in localStorage (and writes
// a default at start-up, as most do), one in IndexedDB. The apps live on their own origin;
// snapkeep on another (CORS). Each scenario checks what reached the server over HTTP, and
// prints how long it took.
//
// SNAPKEEP_BIN=$PWD/target/debug/snapkeep node --test --test-concurrency=1 tests/browser/mirror.test.mjs

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, HERE, launchBrowser, screenshot, serveApp, startServer } from './support.mjs';

const TIMEOUT = 60000;

/** The tag, as an app developer would paste it. */
const tag = (server, attributes) =>
  `<script src="${server.origin}/snapkeep-mirror.js" ${attributes}></script>`;

// A vanilla todo app: todos in localStorage "todos-vanilla" (JSON), a theme in "theme" (text).
// It writes its default before anything else, changes todos by property assignment and the
// theme with setItem and removeItem, and records what it started on.
const TODO_APP = (head) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
${head}
<title>Todos</title>
<script>
  var KEY = 'todos-vanilla';
  var stored = localStorage.getItem(KEY);
  window.startedWith = stored;
  window.loads = Number(sessionStorage.getItem('loads') || 0) + 1;
  sessionStorage.setItem('loads', String(window.loads));
  var state = stored ? JSON.parse(stored) : { todos: [] };
  if (!stored) localStorage.setItem(KEY, JSON.stringify(state));
  function render() {
    var list = document.getElementById('list');
    if (list) list.textContent = state.todos.map(function (t) { return (t.done ? '[x] ' : '[ ] ') + t.text; }).join('\\n');
  }
  window.app = {
    add: function (text) { state.todos.push({ text: text, done: false }); localStorage[KEY] = JSON.stringify(state); render(); },
    theme: function (name) { localStorage.setItem('theme', name); },
    plain: function () { localStorage.removeItem('theme'); },
  };
  addEventListener('DOMContentLoaded', render);
</script>
</head>
<body><h1>Todos</h1><pre id="list"></pre></body>
</html>`;

// A notes app on IndexedDB: database "notes-db" (version 2), store "notes" (autoIncrement
// keys, an index by tag), a welcome note written when it finds none; dates and bytes in values.
const NOTES_APP = (head) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
${head}
<title>Notes</title>
<script>
  window.ready = new Promise(function (resolve, reject) {
    var open = indexedDB.open('notes-db', 2);
    open.onupgradeneeded = function () {
      var store = open.result.createObjectStore('notes', { keyPath: 'id', autoIncrement: true });
      store.createIndex('by-tag', 'tags', { multiEntry: true });
    };
    open.onerror = function () { reject(open.error); };
    open.onsuccess = function () {
      var db = open.result;
      window.db = db;
      var read = db.transaction('notes').objectStore('notes').getAll();
      read.onsuccess = function () {
        window.startedWith = read.result.map(function (n) { return n.title; });
        if (read.result.length) return resolve(db);
        var tx = db.transaction('notes', 'readwrite');
        tx.objectStore('notes').add({ title: 'Welcome', tags: ['intro'], at: new Date(0), raw: new Uint8Array([1, 2, 3]) });
        tx.oncomplete = function () { resolve(db); };
      };
    };
  });
  window.app = {
    add: function (title) {
      return window.ready.then(function (db) {
        return new Promise(function (resolve) {
          var tx = db.transaction('notes', 'readwrite');
          tx.objectStore('notes').add({ title: title, tags: ['work'], at: new Date(Date.UTC(2026, 11, 4)), raw: new Uint8Array([9]) });
          tx.oncomplete = resolve;
        });
      });
    },
    titles: function () {
      return window.ready.then(function (db) {
        return new Promise(function (resolve) {
          var read = db.transaction('notes').objectStore('notes').getAll();
          read.onsuccess = function () { resolve(read.result.map(function (n) { return n.title; })); };
        });
      });
    },
  };
</script>
</head>
<body><h1>Notes</h1></body>
</html>`;

let browser;
let app;
let server;
const routes = {};

before(async () => {
  browser = await launchBrowser();
  app = await serveApp(routes);
  server = await startServer({
    env: { SNAPKEEP_CORS_ORIGINS: app.origin, SNAPKEEP_LOG: 'info' },
  });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
});

/** The session's latest document on the server, or null. */
async function onServer(session) {
  const response = await fetch(`${server.url}/${session}/latest`);
  if (response.status === 404) return null;
  return { id: response.headers.get('x-snapshot-id'), doc: await response.json() };
}

/** Serves `html` at a new path of the app's origin and returns its URL. */
function page(html) {
  const path = `/app-${Math.random().toString(36).slice(2)}.html`;
  routes[path] = ['text/html; charset=utf-8', html];
  return `${app.origin}${path}`;
}

/** Milliseconds from now until `check` passes. */
async function timed(check, what) {
  const started = Date.now();
  await eventually(check, { ms: 15000, what });
  return Date.now() - started;
}

describe('a localStorage app with the tag', () => {
  test("the README's tag works as written", { timeout: TIMEOUT }, async () => {
    const readme = readFileSync(join(HERE, '../../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Use it from your web app'));
    const example = section.match(/```html\n([\s\S]*?)```/)[1];
    assert.match(example, /snapkeep-mirror\.js/, 'the first example is the one tag');
    const session = 'ls-readme';
    const head = example.replaceAll('http://127.0.0.1:8080', server.origin).replace('"user-42"', `"${session}"`);
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(page(TODO_APP(head)));
    await tab.evaluate(() => app.add('from the readme'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the backup' });
    await context.close();
  });

  test('every change reaches the server while the tab stays open', { timeout: TIMEOUT }, async () => {
    const session = 'ls-open';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    // The app's default on a new session is a state like any other: it is backed up.
    await eventually(async () => (await onServer(session))?.doc?.localStorage?.['todos-vanilla'], { what: 'the default' });

    await tab.evaluate(() => app.add('milk')); // localStorage[key] = …
    const assigned = await timed(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, 'an assignment');
    await tab.evaluate(() => app.theme('dark')); // setItem, a value that is no JSON
    const set = await timed(async () => (await onServer(session))?.doc.localStorageText?.theme === 'dark', 'a setItem');
    await tab.evaluate(() => app.plain()); // removeItem
    const removed = await timed(async () => !('localStorageText' in ((await onServer(session))?.doc ?? {})), 'a removeItem');
    console.log(`on the server after: an assignment ${assigned} ms, a setItem ${set} ms, a removeItem ${removed} ms (debounce 1000 ms)`);
    for (const ms of [assigned, set, removed]) assert.ok(ms < 2000, `${ms} ms`);

    // Readable JSON: the value is the document the app wrote, not an escaped string.
    const { doc } = await onServer(session);
    assert.deepEqual(doc, { localStorage: { 'todos-vanilla': { todos: [{ text: 'milk', done: false }] } } });
    await context.close();
  });

  test('an emptied browser starts on the restored state before the app reads it', { timeout: TIMEOUT }, async () => {
    const session = 'ls-restore';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const first = await browser.newContext();
    const tab = await first.newPage();
    await tab.goto(url);
    await tab.evaluate(() => { app.add('bread'); app.add('jam'); app.theme('dark'); });
    await eventually(async () => (await onServer(session))?.doc.localStorageText?.theme === 'dark', { what: 'the backup' });
    const saved = (await onServer(session)).doc;
    await first.close();

    // A wiped browser: a new context, nothing stored.
    const wiped = await browser.newContext();
    const again = await wiped.newPage();
    const started = Date.now();
    await again.goto(url);
    await again.waitForFunction(() => window.startedWith !== undefined);
    const ms = Date.now() - started;
    const read = await again.evaluate(() => ({ startedWith: window.startedWith, loads: window.loads, theme: localStorage.getItem('theme') }));
    console.log(`an emptied browser started on its restored state after ${ms} ms (the app's code ran ${read.loads} time)`);
    assert.deepEqual(JSON.parse(read.startedWith), saved.localStorage['todos-vanilla']);
    assert.equal(read.theme, 'dark');
    assert.equal(read.loads, 1, "the app's code never ran on the empty browser");
    assert.match(await again.innerText('#list'), /\[ \] bread\n\[ \] jam/);
    // Its default never went out: the server still holds what the first browser saved.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual((await onServer(session)).doc, saved);
    await screenshot(again, 'mirror-restored');
    await wiped.close();
  });

  test('offline, then back online with no user action', { timeout: TIMEOUT }, async () => {
    const session = 'ls-offline';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    await eventually(async () => onServer(session), { what: 'the default' });
    await context.setOffline(true);
    await tab.evaluate(() => app.add('while offline'));
    await tab.waitForFunction(() => snapkeepMirror.client.status === 'offline');
    assert.equal((await onServer(session)).doc.localStorage['todos-vanilla'].todos.length, 0);
    await context.setOffline(false);
    const ms = await timed(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 1, 'the queued change');
    console.log(`back online: the change was on the server ${ms} ms later`);
    await context.close();
  });

  test('a tab closed right after a change', { timeout: TIMEOUT }, async () => {
    const session = 'ls-close';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    await eventually(async () => onServer(session), { what: 'the default' });
    await tab.evaluate(() => app.add('last words'));
    await tab.close({ runBeforeUnload: true });
    const ms = await timed(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos[0]?.text === 'last words', 'the last change');
    console.log(`closed right after a change: on the server ${ms} ms after the close`);
    await context.close();
  });

  test('two tabs of one browser back up one state, without conflicts', { timeout: TIMEOUT }, async () => {
    const session = 'ls-tabs';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const [one, two] = [await context.newPage(), await context.newPage()];
    await one.goto(url);
    await two.goto(url);
    await one.evaluate(() => app.add('from one'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 1, { what: "one's change" });
    await two.reload(); // the app reads its state once, at start
    await two.evaluate(() => app.add('from two'));
    const texts = async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.map((t) => t.text);
    await eventually(async () => (await texts()).length === 2, { what: "two's change" });
    assert.deepEqual(await texts(), ['from one', 'from two']);
    for (const tab of [one, two]) assert.notEqual(await tab.evaluate(() => snapkeepMirror.client.status), 'conflict');
    await context.close();
  });

  test('two devices: a real conflict shows on the badge, and the other device wins when asked', { timeout: TIMEOUT }, async () => {
    const session = 'ls-devices';
    // Without the change feed the phone cannot know of the laptop's save before its own.
    const url = page(TODO_APP(tag(server, `data-session="${session}" data-live="off"`)));
    const laptop = await browser.newContext();
    const phone = await browser.newContext();
    const a = await laptop.newPage();
    await a.goto(url);
    await a.evaluate(() => app.add('shared'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the first state' });
    const b = await phone.newPage();
    await b.goto(url); // restored from the server
    assert.deepEqual(JSON.parse(await b.evaluate(() => window.startedWith)).todos.map((t) => t.text), ['shared']);

    await a.evaluate(() => app.add('laptop'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 2, { what: "the laptop's change" });
    await b.evaluate(() => app.add('phone')); // the phone never saw the laptop's
    await b.waitForFunction(() => snapkeepMirror.client.status === 'conflict');
    const badge = b.locator('snapkeep-badge div');
    assert.match(await badge.innerText(), /another device saved a newer state/);
    await screenshot(b, 'mirror-conflict');
    // Nothing was overwritten: the server still has the laptop's.
    assert.deepEqual((await onServer(session)).doc.localStorage['todos-vanilla'].todos.map((t) => t.text), ['shared', 'laptop']);

    await badge.getByRole('button', { name: "Use the other device's" }).click();
    await b.waitForFunction(() => window.startedWith && JSON.parse(window.startedWith).todos.length === 2);
    assert.match(await b.innerText('#list'), /shared\n\[ \] laptop/);
    await laptop.close();
    await phone.close();
  });

  test('data-conflict="local": this device wins, without a question', { timeout: TIMEOUT }, async () => {
    const session = 'ls-local';
    const url = page(TODO_APP(tag(server, `data-session="${session}" data-conflict="local" data-live="off"`)));
    const laptop = await browser.newContext();
    const phone = await browser.newContext();
    const a = await laptop.newPage();
    await a.goto(url);
    await a.evaluate(() => app.add('shared'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the first state' });
    const b = await phone.newPage();
    await b.goto(url);
    await a.evaluate(() => app.add('laptop'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 2, { what: "the laptop's" });
    await b.evaluate(() => app.add('phone'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.at(-1).text === 'phone', { what: "the phone's" });
    await laptop.close();
    await phone.close();
  });

  test('the inspection page shows a mirrored document as a tree', { timeout: TIMEOUT }, async () => {
    const session = 'ls-inspect';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    await tab.evaluate(() => app.add('tree'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the backup' });
    const { id } = await onServer(session);
    const inspect = await context.newPage();
    await inspect.goto(`${server.origin}/#/s/${session}/${id}`);
    await inspect.waitForSelector('#content .tree');
    const lines = await inspect.$eval('#content .tree', (tree) => tree.innerText.split('\n').map((l) => l.trim()).filter(Boolean));
    assert.ok(lines.some((line) => /^"text": "tree",?$/.test(line)), lines.join('\n'));
    await screenshot(inspect, 'mirror-inspect');
    await context.close();
  });

  test('without data-session, a session is made for the browser and a recovery link brings it back', { timeout: TIMEOUT }, async () => {
    const url = page(TODO_APP(tag(server, '')));
    const first = await browser.newContext();
    const tab = await first.newPage();
    await tab.goto(url);
    const session = await tab.evaluate(() => snapkeepMirror.session);
    assert.match(session, /^b[0-9a-z]{32}$/);
    await tab.evaluate(() => app.add('mine'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the backup' });
    await tab.locator('snapkeep-badge div').click();
    const link = (await tab.locator('snapkeep-badge div').innerText()).match(/https?:\/\/\S+/)[0];
    assert.ok(link.endsWith(`#snapkeep=${session}`), link);
    await first.close();

    const wiped = await browser.newContext();
    const again = await wiped.newPage();
    await again.goto(link);
    await again.waitForFunction(() => window.startedWith !== undefined);
    assert.deepEqual(JSON.parse(await again.evaluate(() => window.startedWith)).todos.map((t) => t.text), ['mine']);
    assert.equal(await again.evaluate(() => location.hash), '', 'the link is taken out of the address');
    await wiped.close();
  });

  test('saves cost one preflight, not one each', { timeout: TIMEOUT }, async () => {
    const session = 'ls-preflight';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    // Counted in the server's log: a browser's own request events leave preflights out.
    const answered = (method) => server.log.filter((line) => /answered/.test(line) && line.includes(`method="${method}"`)).length;
    const [posts0, preflights0] = [answered('POST'), answered('OPTIONS')];
    await tab.goto(url);
    for (let n = 0; n < 6; n++) {
      await tab.evaluate((n) => app.add(`item ${n}`), n);
      await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === n + 1, { what: `save ${n}` });
    }
    const posts = answered('POST') - posts0;
    const preflights = answered('OPTIONS') - preflights0;
    console.log(`${posts} saves cost ${preflights} preflight(s)`);
    assert.ok(posts >= 6, `${posts}`);
    assert.ok(preflights <= 1, `${preflights} preflights for ${posts} saves`);
    await context.close();
  });
});

describe('an IndexedDB app with the tag', () => {
  test('committed transactions reach the server, readable, while the tab stays open', { timeout: TIMEOUT }, async () => {
    const session = 'idb-open';
    const url = page(NOTES_APP(tag(server, `data-session="${session}" data-indexeddb="notes-db"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    await tab.evaluate(() => window.ready);
    await eventually(async () => (await onServer(session))?.doc.indexedDB?.['notes-db'], { what: 'the welcome note' });
    await tab.evaluate(() => app.add('groceries'));
    const ms = await timed(async () => (await onServer(session)).doc.indexedDB['notes-db'].stores.notes.records.length === 2, 'a transaction');
    console.log(`a committed IndexedDB transaction was on the server ${ms} ms later`);
    assert.ok(ms < 2000, `${ms} ms`);
    const db = (await onServer(session)).doc.indexedDB['notes-db'];
    assert.equal(db.version, 2);
    assert.deepEqual(db.stores.notes.indexes, [{ name: 'by-tag', keyPath: 'tags', unique: false, multiEntry: true }]);
    assert.deepEqual(db.stores.notes.records[0].value, {
      title: 'Welcome', tags: ['intro'], at: { $date: '1970-01-01T00:00:00.000Z' },
      raw: { $bytes: 'AQID', $type: 'Uint8Array' }, id: 1,
    });
    await context.close();
  });

  test('an emptied browser gets its database back before the app opens it', { timeout: TIMEOUT }, async () => {
    const session = 'idb-restore';
    const url = page(NOTES_APP(tag(server, `data-session="${session}" data-indexeddb="notes-db"`)));
    const first = await browser.newContext();
    const tab = await first.newPage();
    await tab.goto(url);
    await tab.evaluate(() => app.add('kept'));
    await eventually(async () => (await onServer(session))?.doc.indexedDB?.['notes-db'].stores.notes.records.length === 2, { what: 'the backup' });
    await first.close();

    const wiped = await browser.newContext();
    const again = await wiped.newPage();
    await again.goto(url);
    await again.evaluate(() => window.ready);
    assert.deepEqual(await again.evaluate(() => window.startedWith), ['Welcome', 'kept']);
    const restored = await again.evaluate(() => new Promise((resolve) => {
      const read = db.transaction('notes').objectStore('notes').get(2);
      read.onsuccess = () => resolve({ at: read.result.at instanceof Date, raw: read.result.raw instanceof Uint8Array, tags: read.result.tags });
    }));
    assert.deepEqual(restored, { at: true, raw: true, tags: ['work'] });
    // The key generator goes on after the restored keys.
    await again.evaluate(() => app.add('after'));
    assert.deepEqual(await again.evaluate(() => app.titles()), ['Welcome', 'kept', 'after']);
    await wiped.close();
  });
});

describe('live: other devices and the inspection page hear of changes', () => {
  test('a change on one device is applied in the other, open, within seconds', { timeout: TIMEOUT }, async () => {
    const session = 'live-devices';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const laptop = await browser.newContext();
    const phone = await browser.newContext();
    const a = await laptop.newPage();
    await a.goto(url);
    await a.evaluate(() => app.add('first'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the first state' });
    const b = await phone.newPage();
    await b.goto(url);
    await b.waitForFunction(() => window.startedWith && JSON.parse(window.startedWith).todos.length === 1);
    await b.waitForTimeout(300); // its feed is open

    await a.evaluate(() => app.add('from the laptop'));
    const started = Date.now();
    await b.waitForFunction(() => window.startedWith && JSON.parse(window.startedWith).todos.length === 2, null, { timeout: 10000 });
    console.log(`another device's change was applied (and the page started on it) ${Date.now() - started} ms after it was made`);
    assert.match(await b.innerText('#list'), /first\n\[ \] from the laptop/);
    assert.notEqual(await b.evaluate(() => snapkeepMirror.client.status), 'conflict');
    await laptop.close();
    await phone.close();
  });

  test('a restore on the inspection page reaches an open app tab, and its timeline updates itself', { timeout: TIMEOUT }, async () => {
    const session = 'live-restore';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(url);
    await tab.evaluate(() => app.add('old'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the old state' });
    const { id: old } = await onServer(session);
    await tab.evaluate(() => app.add('new'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 2, { what: 'the new state' });

    const inspect = await context.newPage();
    await inspect.goto(`${server.origin}/#/s/${session}/${old}`);
    await inspect.waitForSelector('#content .tree');
    await inspect.waitForSelector('#live:not([hidden])');
    const timeline = () => inspect.$$eval('#snapshots li.snap', (rows) => rows.length);
    const before = await timeline();

    // A write from elsewhere shows in the timeline without "Refresh".
    await tab.evaluate(() => app.add('newest'));
    await eventually(async () => (await timeline()) === before + 1, { what: 'the timeline to update itself' });

    await inspect.click('#restore');
    await inspect.click('#restore-yes');
    const started = Date.now();
    await tab.waitForFunction(() => window.startedWith && JSON.parse(window.startedWith).todos.length === 1, null, { timeout: 10000 });
    console.log(`a restore on the inspection page reached the open app tab ${Date.now() - started} ms later`);
    assert.match(await tab.innerText('#list'), /^\[ \] old$/);
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the restored latest' });
    await context.close();
  });

  test('a device with an unsaved change is not overwritten by the news: it meets a conflict', { timeout: TIMEOUT }, async () => {
    const session = 'live-unsaved';
    const url = page(TODO_APP(tag(server, `data-session="${session}"`)));
    const laptop = await browser.newContext();
    const phone = await browser.newContext();
    const a = await laptop.newPage();
    await a.goto(url);
    await a.evaluate(() => app.add('shared'));
    await eventually(async () => (await onServer(session))?.doc.localStorage['todos-vanilla'].todos.length === 1, { what: 'the first state' });
    const b = await phone.newPage();
    await b.goto(url);
    await b.waitForFunction(() => window.startedWith && JSON.parse(window.startedWith).todos.length === 1);
    // The phone goes offline and changes something; meanwhile the laptop saves.
    await phone.setOffline(true);
    await b.evaluate(() => app.add('phone, offline'));
    await b.waitForFunction(() => snapkeepMirror.client.status === 'offline');
    await a.evaluate(() => app.add('laptop'));
    await eventually(async () => (await onServer(session)).doc.localStorage['todos-vanilla'].todos.length === 2, { what: "the laptop's" });
    await phone.setOffline(false);
    await b.waitForFunction(() => snapkeepMirror.client.status === 'conflict', null, { timeout: 10000 });
    assert.match(await b.innerText('#list'), /phone, offline/, "the phone's change is still on its screen");
    assert.deepEqual((await onServer(session)).doc.localStorage['todos-vanilla'].todos.map((t) => t.text), ['shared', 'laptop']);
    await laptop.close();
    await phone.close();
  });
});

// End-to-end encryption (connect({ encryption }), the tag's data-passphrase-prompt, the
// inspection page) in Debian's headless Chromium against the real binary. Each scenario looks
// at what the server holds (its files on disk, its answers over HTTP), not only at what the
// page believes: a marker string in the app's state must never reach the disk.
//
// SNAPKEEP_BIN=$PWD/target/debug/snapkeep node --test --test-concurrency=1 tests/browser/encryption.test.mjs

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { eventually, HERE, launchBrowser, screenshot, serveApp, startServer, tempDir } from './support.mjs';

const CLIENT_FILE = join(HERE, '../../client/snapkeep.js');
const TIMEOUT = 60000;
const MARKER = 'MARKER-d41d8cd98f00-the-secret-recipe';
const PASSPHRASE = 'correct horse battery staple';

// The app: a state kept in localStorage "notes", backed up with the client module, restored
// into an emptied browser. Query: server, session, connect()'s options (JSON). Its events
// are recorded in window.events.
const APP_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Secret notes</title>
<p id="status">connecting</p>
<script type="module">
  const params = new URLSearchParams(location.search);
  const server = params.get('server');
  const { connect } = await import(server + '/snapkeep.js');
  const options = JSON.parse(params.get('options') || '{}');
  const client = connect({ url: server + '/api/backup', session: params.get('session'), debounceMs: 60000, ...options });
  window.client = client;
  window.events = [];
  for (const type of ['saving', 'saved', 'offline', 'conflict', 'error', 'remote']) {
    client.on(type, (detail) => {
      window.events.push({ type, ...detail });
      document.getElementById('status').textContent = type + ': ' + (detail.message ?? detail.id ?? '');
    });
  }
  window.edit = (state) => {
    localStorage.setItem('notes', JSON.stringify(state));
    client.save(state);
  };
  window.restored = await client.restoreIfEmpty(
    () => JSON.parse(localStorage.getItem('notes')),
    (state) => localStorage.setItem('notes', JSON.stringify(state)),
  );
  window.ready = true;
</script>
`;

// A third-party-style app left as it is, with the tag first in <head>.
const TAG_APP = (server) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<script src="${server.origin}/snapkeep-mirror.js" data-session="tagged" data-live="off"
  data-passphrase-prompt="Passphrase of your notes backup"></script>
<title>Tagged notes</title>
<script>
  window.startedWith = localStorage.getItem('notes');
  window.app = { write: function (text) { localStorage.setItem('notes', text); } };
</script>
</head><body><h1>Tagged notes</h1></body></html>`;

let browser;
let app;
let server;
const routes = { '/app.html': ['text/html; charset=utf-8', APP_PAGE] };

before(async () => {
  browser = await launchBrowser();
  app = await serveApp(routes);
  server = await startServer({ env: { SNAPKEEP_CORS_ORIGINS: app.origin } });
  routes['/tagged.html'] = ['text/html; charset=utf-8', TAG_APP(server)];
});

after(async () => {
  await browser?.close();
  await app?.close();
  await server?.stop();
});

/** Opens the app in a fresh browser context; resolves once its restore step is over. */
async function openApp(session, options, context) {
  context ??= await browser.newContext();
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error));
  const params = new URLSearchParams({ server: server.origin, session, options: JSON.stringify(options) });
  await page.goto(`${app.origin}/app.html?${params}`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

const withPassphrase = (passphrase = PASSPHRASE) => ({ encryption: { passphrase } });

/** The state the app keeps, as the exact text in its localStorage. */
const notesText = (page) => page.evaluate(() => localStorage.getItem('notes'));

/** Gives the app a state and sends it now: the id it landed as, or null. */
const saveNow = (page, state) => page.evaluate((s) => (window.edit(s), window.client.flush()), state);

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

/** The files of a session on disk: { name: text }. */
function files(session) {
  const dir = join(server.dataDir, session);
  let names = [];
  try {
    names = readdirSync(dir).filter((name) => name.endsWith('.json'));
  } catch {
    return {};
  }
  return Object.fromEntries(names.sort().map((name) => [name, readFileSync(join(dir, name), 'utf8')]));
}

async function latestText(session) {
  const response = await fetch(`${server.url}/${session}/latest`);
  assert.equal(response.status, 200);
  return response.text();
}

const state = (n) => ({ title: `Notes ${n}`, body: `${MARKER} no. ${n}`, tags: ['a', 'ü', '🔒'], n });

test('a state saved with a passphrase is an envelope on disk, and another browser restores it byte for byte', { timeout: TIMEOUT }, async () => {
  const writer = await openApp('alice', withPassphrase());
  const id = await saveNow(writer, state(1));
  assert.match(id ?? '', /^\d{8}T/, 'the save landed');
  const onDisk = files('alice');
  assert.deepEqual(Object.keys(onDisk), [`${id}.json`]);
  const text = onDisk[`${id}.json`];
  assert.ok(!text.includes(MARKER) && !text.includes('Notes 1'), `the file holds the state in the clear: ${text}`);
  const envelope = JSON.parse(text);
  assert.deepEqual(Object.keys(envelope), ['snapkeep-encrypted', 'cipher', 'kdf', 'iv', 'data']);
  assert.equal(envelope['snapkeep-encrypted'], 1);
  assert.equal(envelope.cipher, 'AES-256-GCM');
  assert.deepEqual({ ...envelope.kdf, salt: undefined }, { name: 'PBKDF2', hash: 'SHA-256', iterations: 600000, salt: undefined });
  assert.equal(Buffer.from(envelope.kdf.salt, 'base64').length, 16);
  assert.equal(Buffer.from(envelope.iv, 'base64').length, 12);

  // Another browser, emptied, with the same passphrase: the very text comes back.
  const reader = await openApp('alice', withPassphrase());
  assert.equal(await reader.evaluate(() => window.restored), true);
  assert.equal(await notesText(reader), await notesText(writer));
  assert.deepEqual([...writer.errors, ...reader.errors], []);

  // The CLI prints the envelope as it is.
  const shown = execFileSync(process.env.SNAPKEEP_BIN, ['show', 'alice', '--data-dir', server.dataDir], { encoding: 'utf8' });
  assert.equal(shown, text);

  // An operator with the passphrase and no browser: docs/encryption.md's script opens the file.
  const docs = readFileSync(join(HERE, '../../docs/encryption.md'), 'utf8');
  const script = docs.match(/```js\n(\/\/ open\.mjs[^]*?)```/)?.[1];
  assert.ok(script, "docs/encryption.md has its open.mjs script");
  const dir = tempDir('snapkeep-open-');
  writeFileSync(join(dir, 'open.mjs'), script);
  copyFileSync(CLIENT_FILE, join(dir, 'snapkeep.js'));
  const file = join(server.dataDir, 'alice', `${id}.json`);
  const opened = execFileSync('node', ['open.mjs', file, PASSPHRASE], { cwd: dir, encoding: 'utf8' });
  assert.equal(opened, `${await notesText(writer)}\n`);
  await writer.context().close();
  await reader.context().close();
});

test('an unchanged state is not sent again, even after a reload, and every save seals anew', { timeout: TIMEOUT }, async () => {
  const page = await openApp('bob', withPassphrase());
  const first = await saveNow(page, state(2));
  assert.equal(await saveNow(page, state(2)), first, 'flush names the snapshot holding the state');
  const skipped = (await events(page, 'saved')).at(-1);
  assert.equal(skipped.sent, false);
  assert.equal(skipped.deduplicated, true);
  await page.reload();
  await page.waitForFunction(() => window.ready === true);
  assert.equal(await saveNow(page, state(2)), first, 'after a reload too');
  assert.equal(Object.keys(files('bob')).length, 1, 'one snapshot on disk');
  // A changed state goes out, in a new envelope under the same salt (one key per session).
  const second = await saveNow(page, state(3));
  assert.notEqual(second, first);
  const [a, b] = Object.values(files('bob')).map((text) => JSON.parse(text));
  assert.equal(a.kdf.salt, b.kdf.salt);
  assert.notEqual(a.iv, b.iv);
  await page.context().close();
});

test('a wrong passphrase fails clearly and writes nothing; the right one then meets the server’s state as a conflict', { timeout: TIMEOUT }, async () => {
  const owner = await openApp('carol', withPassphrase());
  await saveNow(owner, state(4));
  const before = files('carol');

  // An emptied browser with a mistyped passphrase: no restore, a clear error.
  const typo = await openApp('carol', withPassphrase('correct horse battery stapler'));
  assert.equal(await typo.evaluate(() => window.restored), false);
  const [restoreError] = await events(typo, 'error');
  assert.equal(restoreError?.code, 'wrong_passphrase', JSON.stringify(restoreError));
  assert.match(restoreError.message, /wrong passphrase/);
  await assert.rejects(typo.evaluate(() => window.client.latest()), /wrong passphrase/);

  // The app goes on with its own state: nothing reaches the server, nothing is queued.
  assert.equal(await saveNow(typo, { title: 'started empty' }), null);
  assert.equal((await events(typo, 'error')).at(-1).code, 'wrong_passphrase');
  assert.deepEqual(await events(typo, 'saving'), [], 'no request was sent');
  assert.equal(await typo.evaluate(() => window.client.queued), 0);
  assert.deepEqual(files('carol'), before, 'the server copy is untouched');

  // unlock() with the right one: the state that waited meets the owner's, opened, as a
  // conflict (this browser started empty); resolve() then sends it, readable by the owner.
  assert.equal(await typo.evaluate((p) => window.client.unlock(p), PASSPHRASE), true);
  const conflict = await eventually(async () => (await events(typo, 'conflict'))[0], { what: 'the conflict' });
  assert.deepEqual(conflict.server, state(4));
  assert.deepEqual(conflict.local, { title: 'started empty' });
  assert.deepEqual(files('carol'), before, 'still untouched');
  assert.ok(await typo.evaluate(() => window.client.resolve()));
  assert.equal(Object.keys(files('carol')).length, 2);
  const latest = await owner.evaluate(() => window.client.latest());
  assert.deepEqual(latest.state, { title: 'started empty' });
  await owner.context().close();
  await typo.context().close();
});

test('changing the passphrase seals the latest again as a new snapshot; the old one then opens nothing new', { timeout: TIMEOUT }, async () => {
  const owner = await openApp('dave', withPassphrase());
  const first = await saveNow(owner, state(5));
  const other = await openApp('dave', withPassphrase()); // another device, restored
  assert.equal(await other.evaluate(() => window.restored), true);

  const changed = await owner.evaluate(() => window.client.changePassphrase('a whole new passphrase'));
  assert.ok(changed && changed > first, `a new snapshot: ${changed}`);
  const envelopes = Object.values(files('dave')).map((text) => JSON.parse(text));
  assert.equal(envelopes.length, 2);
  assert.notEqual(envelopes[0].kdf.salt, envelopes[1].kdf.salt, 'a new salt');
  assert.ok(!JSON.stringify(envelopes).includes(MARKER));

  // The device with the old passphrase: its next save waits in memory (not in the queue,
  // which holds only envelopes the session opens), and the new snapshot stays latest.
  const latestBefore = await latestText('dave');
  assert.equal(await saveNow(other, state(6)), null);
  const refused = (await events(other, 'error')).at(-1);
  assert.equal(refused?.code, 'wrong_passphrase', JSON.stringify(refused));
  assert.equal(await latestText('dave'), latestBefore);
  assert.equal(await other.evaluate(() => window.client.queued), 0);
  // Given the new passphrase, it meets the owner's state, decrypted, as a conflict.
  assert.equal(await other.evaluate(() => window.client.unlock('a whole new passphrase')), true);
  const conflict = await eventually(async () => (await events(other, 'conflict'))[0], { what: 'the conflict' });
  assert.deepEqual(conflict.server, state(5));
  assert.deepEqual(conflict.local, state(6));
  assert.equal(await latestText('dave'), latestBefore);

  // A third browser with the new passphrase restores the same state.
  const fresh = await openApp('dave', withPassphrase('a whole new passphrase'));
  assert.equal(await notesText(fresh), await notesText(owner));
  await owner.context().close();
  await other.context().close();
  await fresh.context().close();
});

test('saves made offline wait in IndexedDB as envelopes only, and go out once the server is back', { timeout: TIMEOUT }, async () => {
  const offline = await startServer({ env: { SNAPKEEP_CORS_ORIGINS: app.origin } });
  const page = await browser.newPage();
  const params = new URLSearchParams({ server: offline.origin, session: 'erin', options: JSON.stringify(withPassphrase()) });
  await page.goto(`${app.origin}/app.html?${params}`);
  await page.waitForFunction(() => window.ready === true);
  assert.ok(await saveNow(page, state(7)));
  await offline.stop();
  assert.equal(await saveNow(page, state(8)), null);
  const rows = await page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('snapkeep');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const all = open.result.transaction('queue').objectStore('queue').getAll();
      all.onsuccess = () => resolve(all.result);
    };
  }));
  assert.equal(rows.length, 1);
  assert.ok(!JSON.stringify(rows).includes(MARKER), 'the queue holds the state in the clear');
  assert.equal(JSON.parse(rows[0].body)['snapkeep-encrypted'], 1);

  const back = await startServer({ port: offline.port, dataDir: offline.dataDir, env: { SNAPKEEP_CORS_ORIGINS: app.origin } });
  const id = await page.evaluate(() => (window.dispatchEvent(new Event('online')), window.client.flush()));
  assert.ok(id, 'the queue was sent');
  const text = readFileSync(join(back.dataDir, 'erin', `${id}.json`), 'utf8');
  assert.ok(!text.includes(MARKER));
  const { deriveKey, unseal } = await import(CLIENT_FILE);
  const envelope = JSON.parse(text);
  assert.deepEqual(JSON.parse(await unseal(envelope, await deriveKey(PASSPHRASE, envelope.kdf))), state(8));
  await page.close();
  await back.stop();
});

test('saves queued before encryption was turned on go out sealed', { timeout: TIMEOUT }, async () => {
  const first = await startServer({ env: { SNAPKEEP_CORS_ORIGINS: app.origin } });
  const context = await browser.newContext();
  const open = async (srv, options) => {
    const page = await context.newPage();
    const params = new URLSearchParams({ server: srv.origin, session: 'gina', options: JSON.stringify(options) });
    await page.goto(`${app.origin}/app.html?${params}`);
    await page.waitForFunction(() => window.ready === true);
    return page;
  };
  const plain = await open(first, {});
  assert.ok(await saveNow(plain, state(11)));
  await first.stop();
  assert.equal(await saveNow(plain, state(12)), null); // queued, as plain JSON
  await plain.close();

  // The app's next version turns encryption on; the server is back.
  const back = await startServer({ port: first.port, dataDir: first.dataDir, env: { SNAPKEEP_CORS_ORIGINS: app.origin } });
  const page = await open(back, withPassphrase());
  const dir = join(back.dataDir, 'gina');
  await eventually(() => readdirSync(dir).filter((name) => name.endsWith('.json')).length === 2, { what: 'the queued save' });
  const newest = readdirSync(dir).filter((name) => name.endsWith('.json')).sort().at(-1);
  const text = readFileSync(join(dir, newest), 'utf8');
  assert.ok(!text.includes(MARKER), `sent in the clear: ${text}`);
  const envelope = JSON.parse(text);
  const { deriveKey, unseal } = await import(CLIENT_FILE);
  assert.deepEqual(JSON.parse(await unseal(envelope, await deriveKey(PASSPHRASE, envelope.kdf))), state(12));
  assert.equal(await page.evaluate(() => window.client.queued), 0);
  await context.close();
  await back.stop();
});

test('the one tag with data-passphrase-prompt asks once, backs up envelopes, and restores an emptied browser', { timeout: TIMEOUT }, async () => {
  const asked = [];
  const answer = (page, passphrase) => page.on('dialog', (dialog) => {
    asked.push(dialog.message());
    dialog.accept(passphrase);
  });
  const first = await browser.newContext();
  const page = await first.newPage();
  answer(page, PASSPHRASE);
  await page.goto(`${app.origin}/tagged.html`);
  await page.evaluate((m) => window.app.write(`note: ${m}`), MARKER);
  await eventually(() => Object.keys(files('tagged')).length === 1, { what: 'the tag to back up the note' });
  assert.ok(!Object.values(files('tagged'))[0].includes(MARKER));
  assert.deepEqual(asked, ['Passphrase of your notes backup']);
  // Reloads do not ask again: the browser remembers the key (not its bytes).
  await page.reload();
  await page.evaluate(() => window.app.write('note: second'));
  await eventually(() => Object.keys(files('tagged')).length === 2, { what: 'the second note to be backed up' });
  assert.equal(asked.length, 1, `asked again: ${asked}`);

  // An emptied browser: the tag asks, restores, and the page starts on the note.
  const second = await browser.newContext();
  const wiped = await second.newPage();
  answer(wiped, PASSPHRASE);
  await wiped.goto(`${app.origin}/tagged.html`);
  await wiped.waitForFunction(() => window.startedWith === 'note: second', null, { timeout: 20000 });
  assert.equal(asked.length, 2);
  await screenshot(wiped, 'encryption-tag-restored');
  await first.close();
  await second.close();
});

test('the inspection page shows an envelope and decrypts it in the page, sending the passphrase nowhere', { timeout: TIMEOUT }, async () => {
  const writer = await openApp('frank', withPassphrase());
  const older = await saveNow(writer, state(9));
  const newer = await saveNow(writer, state(10));
  await writer.context().close();

  const context = await browser.newContext();
  const page = await context.newPage();
  const sent = [];
  page.on('request', (request) => sent.push(`${request.url()} ${request.postData() ?? ''}`));
  await page.goto(`${server.origin}/#/s/frank/${newer}`);
  await page.waitForSelector('#envelope');
  const facts = await page.textContent('#envelope');
  assert.match(facts, /AES-256-GCM/);
  assert.match(facts, /PBKDF2-SHA-256, 600,000 rounds/);
  assert.ok(!(await page.textContent('body')).includes(MARKER));

  await page.fill('#passphrase-input', 'not it');
  await page.click('#passphrase-form button');
  await page.waitForSelector('text=Cannot decrypt');
  await page.fill('#passphrase-input', PASSPHRASE);
  await page.click('#passphrase-form button');
  await page.waitForSelector('#decrypted');
  assert.ok((await page.textContent('#content')).includes(`${MARKER} no. 10`));
  await screenshot(page, 'encryption-page-decrypted');

  // The diff works on what the two envelopes hold.
  await page.goto(`${server.origin}/#/s/frank/${newer}/vs/${older}`);
  await page.waitForSelector('#diff-summary');
  assert.match(await page.textContent('#diff-summary'), /3 changed/);
  assert.ok(!sent.some((line) => line.includes(PASSPHRASE) || line.includes('not it')), 'the passphrase left the page');
  await context.close();
});

// What end-to-end encryption costs in the browser: the key derivation (PBKDF2-SHA-256, the
// client's rounds, once per session and device) and sealing/opening states of three sizes, in
// Debian's headless Chromium, with the client module's own functions. Prints a markdown table.
//
//   (cd tests/browser && npm ci) && node bench/encryption.mjs
//
// Uses tests/browser's playwright-core and /usr/bin/chromium (CHROMIUM names another).

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const CLIENT = readFileSync(new URL('../client/snapkeep.js', import.meta.url));

// 127.0.0.1 is a secure context: WebCrypto is there as on https.
const server = createServer((request, response) => {
  const module = request.url === '/snapkeep.js';
  response.writeHead(200, { 'Content-Type': module ? 'text/javascript' : 'text/html' });
  response.end(module ? CLIENT : '<!doctype html><title>bench</title>');
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage();
await page.goto(`http://127.0.0.1:${server.address().port}/`);

const results = await page.evaluate(async () => {
  const { deriveKey, newKdf, seal, unseal } = await import('/snapkeep.js');
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const time = async (fn, times) => {
    const ms = [];
    for (let i = 0; i < times; i++) {
      const start = performance.now();
      await fn();
      ms.push(performance.now() - start);
    }
    return median(ms);
  };
  const kdf = newKdf();
  const rows = [{ what: `derive the key (PBKDF2-SHA-256, ${kdf.iterations.toLocaleString('en')} rounds)`, ms: await time(() => deriveKey('a passphrase', kdf), 5) }];
  const key = await deriveKey('a passphrase', kdf);
  for (const [kib, withNative] of [[10, true], [100, true], [1000, true], [1000, false]]) {
    // Browsers without Uint8Array.toBase64/fromBase64 (before 2025) take the client's fallback.
    if (!withNative) {
      delete Uint8Array.prototype.toBase64;
      delete Uint8Array.fromBase64;
    }
    // A to-do list of about `kib` KiB: JSON text, as an app's state would be.
    const items = Array.from({ length: Math.round((kib * 1024) / 57) }, (_, i) => ({ id: i, text: `item ${i} of the list`, done: i % 3 === 0 }));
    const text = JSON.stringify({ items });
    let envelope;
    const sealMs = await time(async () => (envelope = await seal(text, key, kdf)), 15);
    const openMs = await time(() => unseal(JSON.parse(envelope), key), 15);
    const bytes = new Blob([text]).size;
    const sealed = new Blob([envelope]).size;
    const how = withNative ? '' : ', base64 in JavaScript';
    rows.push({ what: `seal a ${(bytes / 1024).toFixed(0)} KiB state (its JSON text given${how})`, ms: sealMs, bytes, sealed });
    rows.push({ what: 'open it (the envelope parsed, its text given back)', ms: openMs });
  }
  return rows;
});

console.log(`| step | median ms | state bytes | envelope bytes | ratio |`);
console.log(`|---|---:|---:|---:|---:|`);
for (const row of results) {
  const size = row.bytes ? `| ${row.bytes} | ${row.sealed} | ${(row.sealed / row.bytes).toFixed(3)} |` : '| | | |';
  console.log(`| ${row.what} | ${row.ms.toFixed(1)} ${size}`);
}
console.log(`\nChromium ${browser.version()}, ${new Date().toISOString()}`);
await browser.close();
server.close();

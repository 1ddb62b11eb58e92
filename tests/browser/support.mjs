// What every browser test needs: the real snapkeep binary on 127.0.0.1, a second origin that
// serves an app's page, and Debian's headless Chromium driven by playwright-core.
//
// Run through `cargo test` (tests/browser.rs), which sets SNAPKEEP_BIN to the binary it built.
// By hand: SNAPKEEP_BIN=target/debug/snapkeep node --test --test-concurrency=1 tests/browser/

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const BASE = '/api/backup';
export const SCREENSHOTS = join(HERE, 'screenshots');

const BIN = process.env.SNAPKEEP_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** What to undo when the test process exits: one listener, however many servers. */
const atExit = [];
process.on('exit', () => atExit.forEach((undo) => undo()));

/** A fresh, empty data directory, removed when the process exits. */
export function tempDir(prefix = 'snapkeep-browser-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  atExit.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts snapkeep on 127.0.0.1 (`port` 0 picks a free one) with `dataDir` and extra
 * SNAPKEEP_* settings. Resolves once it logs its "listening on" line.
 * Returns { url, origin, port, dataDir, log, stop(), kill() }.
 */
export async function startServer(options = {}) {
  // A restart on the same port can find it taken for a moment: the port was free to the
  // system again, and an outgoing connection of this machine may have got it as its own.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      const taken = /cannot listen/.test(error.message);
      if (!options.port || !taken || attempt === 20) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

async function startOnce({ dataDir = tempDir(), port = 0, env = {} } = {}) {
  if (!BIN) throw new Error('SNAPKEEP_BIN is not set: run these tests through `cargo test`');
  const child = spawn(BIN, [], {
    env: {
      PATH: process.env.PATH,
      SNAPKEEP_LISTEN: `127.0.0.1:${port}`,
      SNAPKEEP_DATA_DIR: dataDir,
      SNAPKEEP_FSYNC: 'false',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log = [];
  const origin = await new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`snapkeep did not start:\n${log.join('\n')}`)), 20000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        log.push(line);
        const found = line.match(/listening on (http:\/\/[^/\s]+)/);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      }
    });
    // 'close', not 'exit': by then the last lines of its log have been read too.
    child.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`snapkeep exited with ${code}:\n${log.join('\n')}\n${buffered}`));
    });
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  atExit.push(() => child.kill('SIGKILL'));
  return {
    origin,
    url: origin + BASE,
    port: Number(new URL(origin).port),
    dataDir,
    log,
    /** SIGTERM, and wait for the process to end. */
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
    /** SIGKILL, and wait for the process to end. */
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Serves an app's pages from a second origin, the way an app and its snapkeep usually live
 * apart. `routes` maps a path to [contentType, body]. Returns { origin, close() }.
 */
export async function serveApp(routes) {
  const server = createServer((request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    const found = routes[path];
    if (!found) {
      response.writeHead(404).end();
      return;
    }
    const [type, body] = found;
    response.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Debian's Chromium, headless, with no network beyond loopback. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Saves a screenshot of `page` under tests/browser/screenshots/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Polls `check` (async, returns truthy when done) until it passes or `ms` runs out. */
export async function eventually(check, { ms = 10000, every = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, every));
  }
  throw new Error(`timed out waiting for ${what}; last: ${last}`);
}

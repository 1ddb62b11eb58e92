// The endpoint a web developer would hand-write instead of running snapkeep: Express, one
// timestamped file per backup, readdir + unlink to keep the newest 10. No fsync, no atomic
// rename, no validation of the JSON beyond express.json(). A peer for bench/run, not a product.
//
//   PORT=3000 DATA_DIR=./data node bench/express-server.js
const express = require('express');
const fs = require('fs/promises');
const path = require('path');

const dataDir = path.resolve(process.env.DATA_DIR || './data');
const port = Number(process.env.PORT || 3000);
const KEEP = 10;
const SESSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const app = express();
app.use(express.json({ limit: '300mb' }));

app.param('session', (req, res, next, session) =>
  SESSION.test(session) ? next() : res.status(400).json({ error: 'bad session' }));

app.post('/api/backup/:session', async (req, res) => {
  const dir = path.join(dataDir, req.params.session);
  await fs.mkdir(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const name = `${stamp}-${Math.random().toString(36).slice(2, 8)}.json`;
  await fs.writeFile(path.join(dir, name), JSON.stringify(req.body));
  const files = (await fs.readdir(dir)).sort();
  const old = files.slice(0, Math.max(0, files.length - KEEP));
  // Two writes to one session may race to delete the same old file.
  await Promise.all(old.map((f) => fs.unlink(path.join(dir, f)).catch(() => {})));
  res.status(201).json({ id: name });
});

app.get('/api/backup/:session/latest', async (req, res) => {
  const dir = path.join(dataDir, req.params.session);
  const files = (await fs.readdir(dir).catch(() => [])).sort();
  if (files.length === 0) return res.status(404).json({ error: 'no backup yet' });
  res.sendFile(path.join(dir, files[files.length - 1]));
});

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));

app.listen(port, '127.0.0.1', () => console.log(`express backup on ${port}, data in ${dataDir}`));

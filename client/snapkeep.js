// snapkeep.js: the browser client of a snapkeep server. One ES module, no dependencies.
// Saves are debounced, gzipped, and conditional (If-Match), so another tab's or device's
// newer state is never overwritten silently; saves that fail wait in IndexedDB and are sent
// in order once the server answers again; the last state goes out when the page is hidden.
// With `encryption`, states leave the page only as AES-GCM envelopes (see the section on it).
// Types: snapkeep.d.ts. Guide: docs/client.md; encryption: docs/encryption.md.

const QUEUE = 'queue';
const META = 'meta';
/** Largest body sent while the page goes away (browsers allow 64 KiB for all such requests). */
const UNLOAD_MAX = 60000;
/** Bodies smaller than this are not worth gzipping. */
const GZIP_MIN = 1024;
const TIMEOUT = 30000;
// The outcomes of one write, besides the new snapshot's id.
const RETRY = Symbol('retry');
const PAUSE = Symbol('pause');
const DROP = Symbol('drop');
const HOLD = Symbol('hold'); // refused for a reason not tied to the body (401, 403, …): kept
const LOCKED = Symbol('locked'); // encryption: the server's state does not open here: nothing sent

/** Connects to one session of a snapkeep server. See `Client`. */
export function connect(options) {
  return new Client(options);
}

/** A refused read: `status` and `code` are the server's (`status` 0: no answer). */
export class SnapkeepError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'SnapkeepError';
    this.status = status;
    this.code = code;
  }
}

export class Client extends EventTarget {
  /** 'idle', or the last event: 'saving', 'saved', 'offline', 'conflict', 'error'. */
  status = 'idle';
  #o;
  #endpoint;
  #queue;
  #ready;
  #base = null; // id of the snapshot the local state descends from (sent as If-Match)
  #pending = null; // { state }: saved, not yet sent
  #since = 0; // when the oldest unsent save() came, for maxWaitMs
  #timer;
  #retryTimer = null; // set while waiting to retry: saves join the queue meanwhile
  #attempt = 0;
  #queued = 0;
  #conflict = null; // { server, serverId, local } while paused
  #sentKey; // localStorage key of #unacked, so that it outlives the page
  #unacked = []; // digests of the last bodies sent and not acknowledged (at most two)
  #fault = { status: 0, message: 'not sent yet', retryInMs: 0 }; // the last fault, for `offline`
  #token = null; // the last token, for the synchronous send on page hide
  #chain = Promise.resolve();
  #busy = 0; // writes running or waiting in #chain (not a feed event's read): a page-hide send must not overtake them
  #tails = 0; // of those, drains whose last write is answered and that only look for more
  #hooks = []; // run before the page-hide send (a mirror reads its keys)
  #stops = []; // a mirror's watchers, undone by close()
  #crossOrigin; // the server is on another origin than the page (CORS)
  #stopped = new AbortController(); // aborted by close(): ends the change feed
  #shared = false; // the state is the browser's storage, shared by all its tabs (a mirror)
  #listeners = [];
  #tab; // this tab's id (sessionStorage: a reload keeps it), recorded with each queued save
  #release; // ends the Web Lock that tells other tabs this one is alive
  #keys = null; // with `encryption`: the Keyring that seals states into envelopes and opens them
  #checked = null; // promise: the keys opened the session's newest envelope (none: nothing to check)
  #verified = false; // #checked has resolved
  #lastPlain = null; // { id, plain }: digest of the base's state, to skip sending it again
  #plains = new Map(); // digest of a body sealed here → digest of its state
  #plainKey; // localStorage key of #lastPlain

  constructor({ url, session, token, debounceMs = 1000, maxWaitMs = 10000, gzip = true,
    retryMs = 1000, maxRetryMs = 60000, onConflict, live = false, encryption } = {}) {
    super();
    if (!url || !session) throw new TypeError('snapkeep: connect() needs url and session');
    this.url = String(url).replace(/\/+$/, '');
    this.session = session;
    this.#o = { token, debounceMs, maxWaitMs, gzip, retryMs, maxRetryMs, onConflict };
    this.#endpoint = `${this.url}/${encodeURIComponent(session)}`;
    this.#crossOrigin = new URL(this.#endpoint, globalThis.location?.href).origin !== globalThis.location?.origin;
    this.#queue = new Queue(`${this.url} ${session}`, (error) => this.#emit('error', { status: 0,
      code: 'storage', message: `IndexedDB failed (${error?.message}): saves wait in memory, for this page only` }));
    this.#sentKey = `snapkeep:sent ${this.url} ${session}`;
    this.#unacked = (storage()?.getItem(this.#sentKey) ?? '').split(' ').filter(Boolean);
    if (encryption) {
      this.#keys = new Keyring(encryption, this.#queue);
      this.#plainKey = `snapkeep:plain ${this.url} ${session}`;
      const [id, plain] = (storage()?.getItem(this.#plainKey) ?? '').split(' ');
      if (plain) this.#lastPlain = { id, plain };
    }
    const tabKey = `snapkeep:tab ${this.url} ${session}`;
    try {
      this.#tab = sessionStorage.getItem(tabKey);
      if (!this.#tab) sessionStorage.setItem(tabKey, (this.#tab = randomId()));
    } catch {
      this.#tab ??= randomId(); // blocked: an id for this page only
    }
    globalThis.navigator?.locks?.request(`snapkeep tab ${this.#tab}`,
      () => this.#release !== null && new Promise((release) => (this.#release = release)));
    this.#ready = this.#load();
    const hide = () => this.#hide();
    this.#listen(globalThis, 'pagehide', hide);
    this.#listen(globalThis.document, 'visibilitychange', () => {
      if (document.visibilityState === 'hidden') hide();
    });
    this.#listen(globalThis, 'online', () => this.#queued && this.#retryNow());
    if (live) this.#ready.then(() => this.#follow());
  }

  /** Saves that failed and wait to be sent again (in IndexedDB). */
  get queued() {
    return this.#queued;
  }

  /** The open conflict ({ local, server, serverId }), or null. */
  get conflict() {
    const open = this.#conflict;
    return open && { serverId: open.serverId, server: open.server, local: this.#local() };
  }

  /** Calls fn(detail) on each event of that type; returns a function that stops it. */
  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Keeps `state` to send once saves pause for debounceMs (only the last of a burst goes). */
  save(state) {
    if (state === undefined) throw new TypeError('snapkeep: save() needs a state');
    if (!this.#pending) this.#since = Date.now();
    this.#pending = { state };
    // Sealed at once: a page being hidden can then send the envelope without waiting.
    if (this.#keys) this.#sealPending(this.#pending).catch(() => {});
    clearTimeout(this.#timer);
    const wait = Math.min(this.#o.debounceMs, this.#since + this.#o.maxWaitMs - Date.now());
    this.#timer = setTimeout(() => this.flush(), Math.max(0, wait));
  }

  /**
   * Sends the pending state (and the queue before it) now. Resolves to the id of the snapshot
   * that holds it, or null when it was queued, paused by a conflict, or refused.
   */
  flush() {
    clearTimeout(this.#timer);
    return this.#serial(() => this.#locked(() => this.#drain()));
  }

  /** The newest snapshot ({ id, createdAt, state, integrity }), or null when there is none. */
  async latest() {
    const latest = await this.#read('latest');
    return latest && this.#snapshot(latest, true);
  }

  /** One snapshot by id. */
  async get(id) {
    return this.#snapshot(await this.#read(encodeURIComponent(id)));
  }

  /** The session's snapshots, newest first: [{ id, createdAt, bytes }]. */
  async list() {
    const response = await this.#fetch(this.#endpoint);
    if (!response.ok) throw await refusal(response);
    return (await response.json()).snapshots;
  }

  /**
   * When readLocal() gives null or undefined (the browser lost the app's state), fetches the
   * latest snapshot and hands it to applyState(state, snapshot), making it the base of later
   * saves; or, when saves wait in this browser's queue, the newest of those (snapshot null).
   * Resolves to whether it applied a state.
   */
  async restoreIfEmpty(readLocal, applyState) {
    await this.#ready;
    if ((await readLocal()) != null) return false;
    // Saves still queued here are newer than anything on the server: the newest comes back.
    const queued = (await this.#queue.rows()).at(-1);
    if (queued) {
      let state;
      try {
        state = await this.#open(queued.body, { strict: true });
      } catch (error) {
        if (!KEY_FAULTS.includes(error.code)) throw error;
        this.#emit('error', { status: 0, code: error.code, message: error.message, queued: this.#queued });
        return false;
      }
      await applyState(state, null);
      return true;
    }
    let latest;
    try {
      latest = await this.latest();
    } catch (error) {
      // Server down, disabled, rate limited, or a token refused: the app starts anyway, empty;
      // its first save then meets the server's state as a conflict, never overwrites it.
      const { status = 0, code, message } = error;
      if (!(error instanceof SnapkeepError)) this.#emit('error', { status, code: 'invalid_json', message });
      else if (KEY_FAULTS.includes(code)) this.#emit('error', { status, code, message });
      else if (!status || retryable(status)) this.#emit('offline', { queued: this.#queued, status, message, retryInMs: 0 });
      else this.#emit('error', { status, code, message });
      return false;
    }
    if (!latest) return false;
    await this.adopt(latest);
    await applyState(latest.state, latest);
    return true;
  }

  /**
   * Makes a snapshot the base of the local state, dropping unsent saves: with no argument,
   * the server's side of the open conflict; or a snapshot from latest()/get() that the app
   * applied itself. Resolves to its state.
   */
  adopt(snapshot) {
    return this.#serial(async () => {
      const from = snapshot ? { serverId: snapshot.id, server: snapshot.state } : this.#conflict;
      if (!from) throw new TypeError('snapkeep: adopt() needs a snapshot when no conflict is open');
      await this.#ready;
      this.#pending = null;
      await this.#setBase(from.serverId);
      if (this.#keys) this.#knownPlain(from.serverId, plainDigest(from.server));
      await this.#clearQueue();
      this.#conflict = null;
      if (this.status === 'conflict') this.status = 'idle';
      return from.server;
    });
  }

  /**
   * Ends the open conflict by saving `state` (a merge; by default the local state) on top of
   * the server's latest. Without a conflict, the same as save(state) and flush().
   */
  resolve(state) {
    return this.#serial(async () => {
      const open = this.#conflict;
      const next = state !== undefined ? state : open && this.#local();
      if (open) {
        await this.#setBase(open.serverId);
        if (this.#keys) this.#knownPlain(open.serverId, plainDigest(open.server));
        await this.#clearQueue();
        this.#conflict = null;
      }
      if (next !== undefined) this.#pending = { state: next };
    }).then(() => this.flush());
  }

  /**
   * With `encryption`: seals the session's latest state again under `passphrase`, as a new
   * snapshot, and seals every later save so. Saves waiting here are sent first, under the old
   * one. Older snapshots keep the passphrase they were sealed with. Resolves to the new id
   * (null: the session is empty; the new passphrase applies from its first save).
   */
  async changePassphrase(passphrase) {
    if (!this.#keys || this.#keys.given) throw new TypeError('snapkeep: changePassphrase() needs a client with encryption by passphrase');
    if (!passphrase) throw new TypeError('snapkeep: changePassphrase() needs a passphrase');
    await this.flush();
    if (this.#queued || this.#conflict || this.#retryTimer) {
      throw new SnapkeepError(0, 'not_synced', 'saves are still waiting (offline, refused or in conflict): send them before changing the passphrase');
    }
    await this.#serial(async () => {
      await this.#check();
      const latest = await this.#read('latest');
      if (latest && latest.id !== this.#base) {
        // Sealing the server's state again on top of this client's older one would let the
        // app's next save overwrite it without a conflict.
        throw new SnapkeepError(0, 'not_synced', "the session's latest snapshot is not this client's state: adopt() or resolve() it first");
      }
      const state = latest && (await this.#open(latest.text, { strict: true }));
      this.#keys.change(passphrase);
      this.#checked = Promise.resolve(); // the new passphrase is the session's from now on
      this.#verified = true;
      if (!latest) return;
      await this.#setBase(latest.id, latest.text, true);
      this.#lastPlain = null; // the same state, sealed anew: it must go out
      this.#pending ??= { state };
    });
    return this.flush();
  }

  /**
   * After a `wrong_passphrase` or `no_passphrase` error: tries `passphrase` (or, without one,
   * asks the `passphrase` function again) on the session's newest envelope, and sends what
   * waits once it opens. Resolves to true when it does; false (after an `error`) when not.
   */
  async unlock(passphrase) {
    if (!this.#keys) throw new TypeError('snapkeep: unlock() needs a client with encryption');
    this.#keys.reset(passphrase);
    this.#checked = null;
    this.#verified = false;
    try {
      await this.#check();
    } catch (error) {
      this.#emit('error', { status: error.status ?? 0, code: error.code, message: error.message });
      return false;
    }
    this.flush();
    return true;
  }

  /**
   * Backs up browser storage as one readable document and puts it back into an emptied
   * browser: `localStorage` keys (names, a trailing `*` for a prefix, or true for every key)
   * and `indexedDB` databases (names). Every change is saved while the page is open, whether
   * the app used setItem, a property assignment, removeItem or an IndexedDB transaction: a
   * change of localStorage is seen within `pollMs`, a committed IndexedDB transaction at once.
   * With `restore` (the default), an emptied browser gets the latest snapshot put back first
   * (see restoreIfEmpty). With the client's `live` feed, another device's newer state
   * (`remote`) is written into storage when this browser has nothing unsaved, then `applied`
   * is emitted (`applyRemote: false` leaves that to the app). Returns { restored, sync, stop }.
   */
  mirror({ localStorage: keys = true, indexedDB: databases = [], pollMs = 500, restore = true, applyRemote = true } = {}) {
    const what = { keys, databases };
    this.#shared = true;
    let last = null;
    let idb = {}; // the databases as last exported: a page-hide save cannot wait for a new export
    let stopped = false;
    const send = (doc) => {
      const text = JSON.stringify(doc);
      // An empty browser is what a restore repairs, never a state to back up.
      if (stopped || text === last || text === '{}') return;
      last = text;
      this.save(doc);
    };
    // Synchronous (the page may be closing): localStorage as it is, the databases as last read.
    const current = () => ({ ...readLocalStorage(keys), ...(Object.keys(idb).length ? { indexedDB: idb } : {}) });
    const sync = () => send(current());
    let reading = Promise.resolve();
    // One read of the databases at a time, each followed by a save of what changed.
    const refresh = () => {
      reading = reading.then(async () => {
        if (stopped) return;
        idb = await readDatabases(databases);
        sync();
      }).catch((error) => this.#emit('error', { status: 0, code: 'indexeddb', message: `cannot read IndexedDB (${error?.message})` }));
      return reading;
    };
    const started = (restore
      ? this.restoreIfEmpty(() => isEmpty(what).then((empty) => (empty ? null : true)), (doc) => applyMirror(doc, what))
      : Promise.resolve(false)
    ).then(async (done) => {
      if (stopped) return done;
      await refresh();
      const unwatch = watch(what, { pollMs, localStorage: sync, indexedDB: refresh });
      this.#stops.push(unwatch);
      return done;
    });
    this.#hooks.push(sync);
    // Another device's newer state is put into this browser's storage when nothing here is
    // unsaved; else the save on its way meets it as a conflict.
    const unfollow = this.on('remote', async (remote) => {
      if (stopped || !applyRemote) return;
      const text = JSON.stringify(current());
      const clean = (text === last || text === '{}') && !this.#pending && !this.#queued && !this.#conflict && this.#busy === 0;
      if (!clean) return;
      await this.adopt({ id: remote.id, state: remote.state });
      await applyMirror(remote.state, what);
      idb = await readDatabases(databases);
      last = JSON.stringify(current());
      this.#emit('applied', { id: remote.id });
    });
    this.#stops.push(unfollow);
    return {
      restored: started,
      sync: () => (databases.length ? refresh() : sync()),
      stop: () => {
        stopped = true;
        this.#hooks = this.#hooks.filter((hook) => hook !== sync);
        started.then(() => this.#stops.splice(0).forEach((stop) => stop()));
      },
    };
  }

  /** The same as mirror({ localStorage: keys, indexedDB: [] }). */
  mirrorLocalStorage(keys) {
    return this.mirror({ localStorage: keys });
  }

  /** Stops timers and listeners; unsent saves stay queued (or are dropped, if only pending). */
  close() {
    clearTimeout(this.#timer);
    clearTimeout(this.#retryTimer);
    this.#release?.(); // its queued saves are another tab's to send now
    this.#release = null;
    for (const [target, type, fn] of this.#listeners) target.removeEventListener(type, fn);
    this.#listeners = [];
    this.#stops.splice(0).forEach((stop) => stop());
    this.#stopped.abort();
  }

  // --- the change feed ---

  /**
   * Follows the session's change feed: one tab of the browser (the one holding a Web Lock)
   * reads the stream and passes each event to the others on a BroadcastChannel, so a browser
   * holds one stream per session however many tabs it has. When that tab closes, another takes
   * over. A dropped stream reconnects with a growing pause, carrying Last-Event-ID.
   */
  #follow() {
    const name = `snapkeep feed ${this.#endpoint}`;
    const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(name) : null;
    const signal = this.#stopped.signal;
    if (channel) {
      channel.onmessage = (message) => this.#heard(message.data);
      signal.addEventListener('abort', () => channel.close());
    }
    const lead = async () => {
      for (let attempt = 0; !signal.aborted; attempt++) {
        let wait;
        try {
          await this.#stream((event) => {
            attempt = 0;
            channel?.postMessage(event);
            this.#heard(event);
          });
        } catch (error) {
          wait = error.retryAfter;
        }
        if (signal.aborted) return;
        wait ??= Math.min(30000, 1000 * 2 ** attempt) * (0.8 + Math.random() * 0.4);
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, wait);
          signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
        });
      }
    };
    const locks = globalThis.navigator?.locks;
    if (locks) locks.request(name, { signal }, lead).catch(() => {});
    else lead();
  }

  /** Reads the feed until it ends, calling `onEvent({ type, id, data })` for each event. */
  async #stream(onEvent) {
    const headers = { ...(await this.#auth()) };
    if (this.#base) headers['Last-Event-ID'] = this.#base;
    const response = await fetch(`${this.#endpoint}/events`, { headers, signal: this.#stopped.signal });
    if (!response.ok) {
      const error = await refusal(response);
      error.retryAfter = seconds(response.headers.get('Retry-After')) ?? undefined;
      throw error;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { type: 'message', id: undefined, data: '' };
        for (const line of block.split('\n')) {
          const [field, ...rest] = line.split(':');
          const text = rest.join(':').replace(/^ /, '');
          if (field === 'event') event.type = text;
          else if (field === 'id') event.id = text;
          else if (field === 'data') event.data += text;
        }
        if (event.data) onEvent({ ...event, data: JSON.parse(event.data) });
      }
    }
  }

  /** An event of the feed, read by this tab or passed on by the tab that reads it. */
  #heard(event) {
    // Decided after the writes in flight (a save's own event is no news), told after them.
    if (event.type === 'snapshot') this.#serial(() => this.#remote(event.id), false).then((remote) => remote && this.#emit('remote', remote));
    else if (event.type === 'deleted') {
      // The base is gone: an unchanged state must go out again to be kept.
      if (event.data?.latest?.id !== this.#base) this.#lastPlain = null;
      this.#emit('deleted', event.data);
    }
  }

  /**
   * A new latest on the server: unless it is what this tab (or, for a mirror, this browser)
   * already holds, or what it sent itself, the `remote` event's detail, with its state.
   */
  async #remote(id) {
    if (!id || id === this.#base) return undefined;
    if (this.#shared && id === (await this.#queue.meta())) return undefined;
    let latest;
    try {
      latest = await this.#read('latest');
    } catch {
      return undefined; // the next event, or the next save, tells
    }
    if (!latest || latest.id === this.#base || this.#unacked.includes(digest(latest.text))) return undefined;
    let state;
    try {
      state = await this.#open(latest.text, { newest: true });
    } catch (error) {
      this.#emit('error', { status: 0, code: error.code, message: error.message });
      return undefined;
    }
    return { id: latest.id, createdAt: createdAt(latest.id), state };
  }

  // --- sending ---

  async #load() {
    if (typeof this.#o.token === 'function') await this.#auth().catch(() => {});
    this.#base = (await this.#queue.meta()) ?? null;
    if (this.#unacked.length) {
      // A send whose answer this browser never read (the page was closing): if it is the
      // latest, it is the base.
      const latest = await this.#read('latest').catch(() => null);
      if (latest && this.#unacked.includes(digest(latest.text))) await this.#setBase(latest.id, latest.text, true);
    }
    this.#queued = await this.#queue.count();
    if (this.#queued) {
      this.#fault = { status: 0, message: 'saves queued before this page loaded', retryInMs: 0 };
      this.#emit('offline', { queued: this.#queued, ...this.#fault });
      this.#retryNow();
    }
  }

  /** The queue, oldest first, then the pending state; stops at a fault or a conflict. */
  async #drain() {
    await this.#ready;
    if (this.#conflict) return null;
    if (this.#retryTimer) {
      // Waiting out a fault (and maybe a Retry-After): the pending state joins the queue.
      if (this.#pending) {
        await this.#enqueuePending();
        this.#emit('offline', { queued: this.#queued, ...this.#fault });
      }
      return null;
    }
    let id = this.#base;
    // Saves of other tabs still open are theirs to send (each on top of its own base, so the
    // second of two tabs gets the conflict); those of closed tabs are sent here.
    const live = await liveTabs();
    let tail = false;
    const untail = () => {
      if (tail) this.#tails--;
      tail = false;
    };
    try {
      for (;;) {
        const entry = (await this.#queue.rows()).find((row) => this.#mine(row) || !live?.has(row.tab));
        const pending = !entry && this.#pending;
        if (!entry && !pending) return id;
        untail();
        if (pending) this.#pending = null;
        let body = entry?.body;
        const orphan = entry && !this.#mine(entry) ? entry : undefined;
        let outcome;
        if (this.#keys) {
          // Nothing leaves before the passphrase has opened the session's newest envelope: a
          // wrong one must never put a snapshot no other device can read on top.
          try {
            await this.#check();
            body = pending ? (await this.#sealPending(pending)).body : await this.#resealed(entry.body);
            if (body === undefined) {
              // Sealed offline under a key this page no longer has (another passphrase): no
              // device could open it. The app's state goes with its next save.
              await this.#dequeue(entry.seq);
              this.#emit('error', { status: 0, code: 'wrong_passphrase', queued: this.#queued,
                message: 'a save sealed offline under a passphrase the session does not have was dropped' });
              continue;
            }
          } catch (error) {
            if (!KEY_FAULTS.includes(error.code)) {
              outcome = this.#failed(error.status ?? 0, error.message);
            } else {
              if (pending) this.#pending ??= pending;
              this.#emit('error', { status: 0, code: error.code, message: error.message, queued: this.#queued });
              return null;
            }
          }
          if (pending && !outcome && this.#unchanged(pending)) {
            // Envelopes of one state differ (each has its own IV): the server cannot tell it
            // is unchanged, so it is not sent.
            this.#emit('saved', { id: this.#base, status: 200, createdAt: createdAt(this.#base),
              bytes: 0, deduplicated: true, sent: false, queued: this.#queued });
            return this.#base;
          }
        } else if (pending) {
          body = pending.body = JSON.stringify(pending.state);
        }
        outcome ??= await this.#write(body, entry?.seq, undefined, false, orphan);
        if (outcome === DROP || typeof outcome === 'string') {
          if (!orphan) id = outcome === DROP ? null : outcome;
          // Only bookkeeping until the next write: a page-hide send may go on top of `id`.
          if (!tail) this.#tails++;
          tail = true;
          continue;
        }
        if (outcome === LOCKED) {
          if (pending) this.#pending ??= pending; // in memory: the queue holds envelopes the session opens
          return null;
        }
        // Not sent. A state that went into the queue meanwhile (the page was hidden while this
        // one was on its way) is newer and supersedes a pending one; else the pending one waits.
        const own = (await this.#queue.rows()).filter((row) => (orphan ? row.tab === orphan.tab : this.#mine(row)));
        const newer = pending && own.length > 0;
        if (outcome === PAUSE) {
          if (pending && !newer) this.#pending ??= pending;
          // A closed tab's save in conflict: this tab shows it, and adopt()/resolve() drop it.
          this.#conflict.orphan = orphan?.tab;
          this.#conflict.local = own.length ? await this.#open(own.at(-1).body) : pending.state;
          this.#paused();
          return null;
        }
        if (pending && !newer) await this.#enqueue(pending);
        await this.#enqueuePending();
        if (outcome === RETRY) this.#emit('offline', { queued: this.#queued, ...this.#fault });
        return null;
      }
    } finally {
      untail();
    }
  }

  /**
   * One POST of `body` on top of the base (`seq`: its place in the queue, left once it is
   * saved or refused). Resolves to the new id, RETRY, PAUSE or DROP.
   */
  async #write(body, seq, response, again = false, orphan) {
    if (!response) {
      this.#emit('saving', { bytes: size(body), queued: this.#queued });
      if (!orphan) this.#sent(body);
      response = this.#post(body, orphan ? orphan.base : this.#base);
    }
    let answer;
    try {
      answer = await response;
    } catch (error) {
      return this.#failed(0, `no answer from the server (${error.message})`);
    }
    if (answer.ok) {
      const saved = await answer.json();
      this.#attempt = 0;
      await this.#landed(saved.id, body, seq, orphan);
      this.#emit('saved', { id: saved.id, status: answer.status, createdAt: saved.createdAt,
        bytes: saved.bytes, deduplicated: saved.deduplicated, queued: this.#queued });
      return saved.id;
    }
    const problem = await answer.json().catch(() => ({}));
    const { status } = answer;
    const message = problem.error || `HTTP ${status}`;
    if (status === 412) return this.#precondition(body, seq, problem, again, orphan);
    if (retryable(status)) {
      return this.#failed(status, message, answer.headers.get('Retry-After'));
    }
    if (held(status)) return this.#hold(status, problem.code, message, body, seq);
    if (seq !== undefined) await this.#dequeue(seq);
    this.#emit('error', { status, code: problem.code, message, state: await this.#open(body).catch(() => undefined) });
    return DROP;
  }

  /** A 412: our own earlier write (then go on), or another writer's (then pause). */
  async #precondition(body, seq, problem, again, orphan) {
    let server = null;
    try {
      if (problem.latest) server = await this.#read('latest');
    } catch (error) {
      if (held(error.status)) return this.#hold(error.status, error.code, error.message, body, seq);
      return this.#failed(error.status ?? 0, error.message);
    }
    if (server && server.text === body) {
      await this.#landed(server.id, body, seq, orphan, true);
      this.#emit('saved', { id: server.id, status: 200, createdAt: createdAt(server.id),
        bytes: size(body), deduplicated: true, queued: this.#queued });
      return server.id;
    }
    if (!again && (!server || (!orphan && this.#unacked.includes(digest(server.text))))) {
      // The session was emptied, or its latest is what this tab sent last (an answer lost on
      // the way, a page-hide send): nothing of anyone else's to overwrite.
      if (orphan) orphan.base = null;
      else await this.#setBase(server ? server.id : null, server?.text, true);
      return this.#write(body, seq, undefined, true, orphan);
    }
    // With encryption, nothing goes on top of a state that does not open here (its passphrase
    // was changed on another device, or in another tab of this browser).
    let theirs;
    try {
      theirs = server && (await this.#open(server.text, { newest: true }));
    } catch (error) {
      if (!KEY_FAULTS.includes(error.code)) throw error;
      this.#emit('error', { status: 0, code: error.code, message: error.message, queued: this.#queued });
      return LOCKED;
    }
    if (!again && !orphan && this.#shared && server && server.id === (await this.#queue.meta())) {
      // Another tab of this browser saved it, from the very storage this state is read from:
      // it is this state's past, not another device's.
      await this.#setBase(server.id, server.text, true);
      return this.#write(body, seq, undefined, true, orphan);
    }
    if (!server) return this.#failed(412, 'the session changed while saving');
    // A latest edited by hand into something that is not JSON comes as its text.
    this.#conflict = { serverId: server.id, server: theirs, local: null };
    return PAUSE;
  }

  /** Refused for a reason of the server's, the token's or the passphrase's: kept in the queue, reported. */
  async #hold(status, code, message, body, seq) {
    this.#emit('error', { status, code, message, state: await this.#open(body).catch(() => undefined),
      queued: this.#queued + (seq === undefined ? 1 : 0) });
    return HOLD;
  }

  #paused() {
    const detail = { status: 412, ...this.conflict };
    this.#emit('conflict', detail);
    const policy = this.#o.onConflict;
    if (policy) {
      Promise.resolve()
        .then(() => policy(detail))
        .then((merged) => merged !== undefined && this.resolve(merged));
    }
  }

  /** A fault worth another try: wait (Retry-After, else a growing backoff), then drain. */
  #failed(status, message, retryAfter) {
    const backoff = Math.min(this.#o.maxRetryMs, this.#o.retryMs * 2 ** this.#attempt++);
    const wait = seconds(retryAfter) ?? backoff * (0.8 + Math.random() * 0.2);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#retryNow(), wait);
    this.#fault = { status, message, retryInMs: Math.round(wait) };
    return RETRY;
  }

  #retryNow() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.flush();
  }

  async #post(body, base) {
    const headers = { 'Content-Type': 'application/json', ...precondition(base, this.#crossOrigin), ...(await this.#auth()) };
    let payload = body;
    if (this.#o.gzip && typeof CompressionStream === 'function' && body.length >= GZIP_MIN) {
      const zipped = new Blob([body]).stream().pipeThrough(new CompressionStream('gzip'));
      payload = await new Response(zipped).blob();
      headers['Content-Encoding'] = 'gzip';
    }
    return fetch(this.#endpoint, { method: 'POST', headers, body: payload, signal: timeout() });
  }

  async #auth() {
    const { token } = this.#o;
    this.#token = typeof token === 'function' ? await token() : token;
    return this.#token ? { Authorization: `Bearer ${this.#token}` } : {};
  }

  /**
   * The page is being hidden or closed: send the pending state now, with a request that
   * outlives the page. `fetch(keepalive)` carries If-Match and the token; where a browser
   * lacks it, `sendBeacon` (text/plain, no headers: unconditional) when no token is needed.
   * While saves are queued, or when the body is too large, it joins the queue instead.
   */
  #hide() {
    for (const hook of this.#hooks) hook();
    if (!this.#pending || this.#conflict) return;
    clearTimeout(this.#timer);
    const pending = this.#pending;
    this.#pending = null;
    if (this.#keys && this.#unchanged(pending)) return;
    // Encrypted: the envelope save() began, once sealed, and once the passphrase was checked.
    const body = !this.#keys ? JSON.stringify(pending.state) : this.#sealedNow(pending);
    if (body !== undefined) pending.body = body;
    const keepalive = typeof Request === 'function' && 'keepalive' in Request.prototype;
    // A beacon is unconditional: never for a token, nor for an envelope (a passphrase may
    // have changed elsewhere since this page checked it).
    const beacon = !keepalive && !this.#o.token && !this.#keys && navigator.sendBeacon;
    if (body === undefined || this.#busy > this.#tails || this.#queued || this.#retryTimer || size(body) > UNLOAD_MAX || !(keepalive || beacon)) {
      // Straight into IndexedDB (not behind a request that may wait on a dead server), to be
      // sent by this page if it lives on, else by the next one.
      this.#enqueue(pending).then(() => {
        if (this.#retryTimer) this.#emit('offline', { queued: this.#queued, ...this.#fault });
        else this.flush();
      });
      return;
    }
    this.#sent(body);
    if (beacon) {
      navigator.sendBeacon(this.#endpoint, body);
      return;
    }
    const headers = { 'Content-Type': 'application/json', ...precondition(this.#base, this.#crossOrigin) };
    if (this.#token) headers.Authorization = `Bearer ${this.#token}`;
    const response = fetch(this.#endpoint, { method: 'POST', keepalive: true, headers, body });
    this.#emit('saving', { bytes: size(body), queued: this.#queued });
    // If the page lives on (it was only hidden), its answer counts like any save's.
    this.#serial(async () => {
      const outcome = await this.#write(body, undefined, response);
      if (outcome === RETRY || outcome === HOLD) {
        await this.#enqueue(pending);
        if (outcome === RETRY) this.#emit('offline', { queued: this.#queued, ...this.#fault });
      }
      if (outcome === LOCKED) this.#pending ??= pending;
      if (outcome === PAUSE) {
        this.#pending ??= pending;
        this.#conflict.local = this.#local();
        this.#paused();
      }
    });
  }

  // --- the queue ---

  /** The pending state joins the queue (while the queue waits, order is kept so). */
  async #enqueuePending() {
    if (!this.#pending) return;
    const pending = this.#pending;
    this.#pending = null;
    await this.#enqueue(pending);
  }

  /** A pending state ({ state }) joins the queue: as JSON text, or encrypted, as its envelope. */
  async #enqueue(pending) {
    let body;
    try {
      body = this.#keys ? (await this.#sealPending(pending)).body : (pending.body ?? JSON.stringify(pending.state));
    } catch (error) {
      // No key (wrong or no passphrase): the queue holds envelopes only, so it waits in memory.
      this.#pending ??= pending;
      this.#emit('error', { status: 0, code: error.code, message: error.message, queued: this.#queued });
      return;
    }
    await this.#queue.add(body, this.#tab, this.#base);
    this.#queued = await this.#queue.count();
  }

  async #dequeue(seq) {
    await this.#queue.remove(seq);
    this.#queued = await this.#queue.count();
  }

  /** Drops this tab's queued saves (and those of the closed tab whose conflict it showed). */
  async #clearQueue() {
    const orphan = this.#conflict?.orphan;
    await this.#queue.clear((row) => this.#mine(row) || (orphan && row.tab === orphan));
    this.#queued = await this.#queue.count();
  }

  /** Saved by this tab, or by a client from before tabs were told apart. */
  #mine(row) {
    return !row.tab || row.tab === this.#tab;
  }

  /**
   * `body` is saved as `id`: it leaves the queue, the rest of its tab's queue goes on top of
   * it, and, when it is this tab's, it is the new base (see #setBase for `latest`).
   */
  async #landed(id, body, seq, orphan, latest) {
    if (!orphan) await this.#setBase(id, body, latest);
    const plain = this.#keys && !orphan && this.#plains.get(digest(body));
    if (plain) this.#knownPlain(id, plain);
    if (seq === undefined && !this.#queued) return;
    this.#queued = await this.#queue.landed(seq, orphan ? orphan.tab : this.#tab, orphan ? id : this.#base);
  }

  // --- encryption ---

  /** A read snapshot as the app sees it: { id, createdAt, state, integrity }. */
  async #snapshot({ id, text, integrity }, newest = false) {
    return { id, createdAt: createdAt(id), state: await this.#open(text, { strict: true, newest }), integrity };
  }

  /**
   * The state in a body: JSON text, or an envelope opened with the keys (a body that is not an
   * envelope is read as it is, so turning encryption on keeps older snapshots readable). Not
   * JSON: the text, or with `strict`, an error. `newest`: the session's latest, whose salt new
   * envelopes take, and whose opening says whether the keys are the session's (see #settle);
   * an answer that comes after the keys changed settles nothing.
   */
  async #open(text, { strict = false, newest = false } = {}) {
    const value = strict ? JSON.parse(text) : parse(text);
    if (!this.#keys || !isEnvelope(value)) return value;
    const generation = this.#keys.generation;
    try {
      const state = JSON.parse(await this.#keys.open(value, newest));
      if (newest && generation === this.#keys.generation) this.#settle(null);
      return state;
    } catch (error) {
      if (!error.code) throw error;
      const refusal = new SnapkeepError(0, error.code, error.message);
      if (newest && generation === this.#keys.generation && KEY_FAULTS.includes(refusal.code)) this.#settle(refusal);
      throw refusal;
    }
  }

  /** The keys are the session's (`fault` null), or not: then nothing is sent until unlock(). */
  #settle(fault) {
    this.#verified = !fault;
    this.#checked = fault ? Promise.reject(fault) : Promise.resolve();
    this.#checked.catch(() => {});
  }

  /**
   * Opens the session's newest envelope once, to learn the session's salt and that the keys are
   * the ones it was sealed with. Rejects with a key fault (kept until unlock()) or with a
   * network fault (tried again next time).
   */
  #check() {
    if (this.#checked) return this.#checked;
    const generation = this.#keys.generation;
    const checking = (async () => {
      const latest = await this.#read('latest');
      if (latest) await this.#open(latest.text, { newest: true });
      // No envelope to open (an empty session, a plain latest): the keys are the session's.
      if (generation === this.#keys.generation && !this.#verified) this.#settle(null);
    })();
    this.#checked = checking;
    checking.catch((error) => {
      if (this.#checked === checking && !KEY_FAULTS.includes(error.code)) this.#checked = null;
    });
    return checking;
  }

  /** Seals a pending state ({ state }) under the current keys, once: resolves to { body, plain }. */
  #sealPending(pending) {
    const { generation } = this.#keys;
    if (pending.generation !== generation || !pending.sealing) {
      pending.generation = generation;
      pending.body = undefined;
      pending.sealing = (async () => {
        const text = JSON.stringify(pending.state);
        // The session's salt, when the server can tell it (offline: this browser's last).
        await this.#check().catch((error) => {
          if (KEY_FAULTS.includes(error.code)) throw error;
        });
        const sealed = await this.#sealText(text);
        if (pending.generation === generation) Object.assign(pending, sealed);
        return sealed;
      })();
    }
    return pending.sealing;
  }

  /** `text` in an envelope: { body, plain }. A key fault (no passphrase given) stops sending. */
  async #sealText(text) {
    const generation = this.#keys.generation;
    let body;
    try {
      // Before the check (offline), a key made now is not taken as the session's.
      body = await this.#keys.seal(text, this.#verified);
    } catch (error) {
      if (!KEY_FAULTS.includes(error.code)) throw error;
      const refusal = new SnapkeepError(0, error.code, error.message);
      if (generation === this.#keys.generation) this.#settle(refusal);
      throw refusal;
    }
    const plain = digest(text);
    if (this.#plains.size >= 8) this.#plains.delete(this.#plains.keys().next().value);
    this.#plains.set(digest(body), plain);
    return { body, plain };
  }

  /**
   * A queued body as it may go out: an envelope under the session's key. One sealed offline
   * under another salt (or queued before encryption was on) is sealed again; undefined when no
   * key here opens it.
   */
  async #resealed(body) {
    const value = parse(body);
    if (isEnvelope(value) && (value.kdf?.salt ?? null) === (this.#keys.kdf?.salt ?? null)) return body;
    let text = body;
    if (isEnvelope(value)) {
      try {
        text = await this.#keys.open(value);
      } catch (error) {
        if (KEY_FAULTS.includes(error.code)) return undefined;
        throw error;
      }
    }
    return (await this.#sealText(text)).body;
  }

  /** The envelope of a pending state if it is sealed and may go out now; else undefined. */
  #sealedNow(pending) {
    return this.#verified && pending.generation === this.#keys.generation ? pending.body : undefined;
  }

  /** Whether a pending state is the state of the base (known from its digest). */
  #unchanged(pending) {
    const plain = pending.plain ?? plainDigest(pending.state);
    return this.#base !== null && this.#lastPlain?.id === this.#base && this.#lastPlain.plain === plain;
  }

  /** Snapshot `id` holds the state of digest `plain`: remembered, so that it is not sent again. */
  #knownPlain(id, plain) {
    if (!this.#keys || !id) return;
    this.#lastPlain = { id, plain };
    try {
      storage()?.setItem(this.#plainKey, `${id} ${plain}`);
    } catch {
      // full or blocked: for this page only
    }
  }

  // --- helpers ---

  #local() {
    const open = this.#conflict;
    return this.#pending && !open.orphan ? this.#pending.state : open.local;
  }

  /** Remembers what is sent, synchronously: the page may be gone before its answer comes. */
  #sent(body) {
    const sent = digest(body);
    const previous = this.#unacked.at(-1);
    if (previous !== sent) this.#unacked = previous ? [previous, sent] : [sent];
    this.#remember();
  }

  #remember() {
    try {
      if (this.#unacked.length) storage()?.setItem(this.#sentKey, this.#unacked.join(' '));
      else storage()?.removeItem(this.#sentKey);
    } catch {
      // full or blocked: remembered for this page only
    }
  }

  /**
   * A new base. With `text`, the body the server acknowledged (or was found holding): only its
   * digest leaves #unacked, and an answer that comes late never moves the base back (ids sort
   * by time), unless it is what the server says its latest is (`latest`). Without `text`, the
   * app chose it (adopt, resolve): nothing sent before counts.
   */
  async #setBase(id, text, latest = false) {
    const unacked = text === undefined ? [] : this.#unacked.filter((d) => d !== digest(text));
    if (unacked.length !== this.#unacked.length) {
      this.#unacked = unacked;
      this.#remember();
    }
    if (!latest && text !== undefined && id && this.#base && id < this.#base) return;
    this.#base = id;
    await this.#queue.meta(id);
  }

  /**
   * Runs `fn` after everything started before it; the chain survives failures. Unless `write`
   * is false (a read, such as a feed event's), it counts in #busy: a page-hide send then does
   * not overtake it.
   */
  #serial(fn, write = true) {
    if (!write) {
      const run = this.#chain.then(fn);
      this.#chain = run.catch(() => {});
      return run;
    }
    this.#busy++;
    const run = this.#chain.then(fn).finally(() => this.#busy--);
    this.#chain = run.catch(() => {});
    return run;
  }

  /** One tab at a time sends a session's queue (Web Locks, where the browser has them). */
  #locked(fn) {
    const locks = globalThis.navigator?.locks;
    return locks ? locks.request(`snapkeep ${this.#endpoint}`, fn) : fn();
  }

  async #fetch(url) {
    try {
      return await fetch(url, { headers: await this.#auth(), signal: timeout() });
    } catch (error) {
      throw new SnapkeepError(0, 'network', `no answer from the server (${error.message})`);
    }
  }

  async #read(which) {
    const response = await this.#fetch(`${this.#endpoint}/${which}`);
    if (response.status === 404 && which === 'latest') return null;
    if (!response.ok) throw await refusal(response);
    const id = response.headers.get('X-Snapshot-Id') ?? response.headers.get('ETag')?.replace(/"/g, '');
    return { id, text: await response.text(), integrity: response.headers.get('X-Snapshot-Integrity') };
  }

  #emit(type, detail) {
    this.status = type;
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #listen(target, type, fn) {
    if (!target) return;
    target.addEventListener(type, fn);
    this.#listeners.push([target, type, fn]);
  }
}

/**
 * The precondition of a save on top of `base`. Across origins it goes as snapkeep's own
 * headers: the Fetch standard sends a request with If-Match or If-None-Match past every cache,
 * and Chromium then also past its cache of CORS preflights, so each save would cost a preflight.
 */
function precondition(base, crossOrigin) {
  const [ifMatch, ifNoneMatch] = crossOrigin
    ? ['Snapkeep-If-Match', 'Snapkeep-If-None-Match']
    : ['If-Match', 'If-None-Match'];
  return base ? { [ifMatch]: `"${base}"` } : { [ifNoneMatch]: '*' };
}

/** The ids of the tabs open now (each holds a Web Lock), or null where there are no locks. */
async function liveTabs() {
  const held = (await globalThis.navigator?.locks?.query())?.held;
  return held && new Set(held.map((lock) => lock.name?.match(/^snapkeep tab (.+)/)?.[1]).filter(Boolean));
}

function randomId() {
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** Errors of keys, not of the network: sending stops until unlock(). */
const KEY_FAULTS = ['wrong_passphrase', 'no_passphrase', 'unsupported_envelope'];

/** What tells one state from another without keeping it: a digest of its JSON text. */
function plainDigest(state) {
  return digest(JSON.stringify(state));
}


/** A snapshot id starts with its UTC creation time: 20261123T185337.123456Z-… */
function createdAt(id) {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)(\.\d+)?Z/.exec(id ?? '');
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] ?? ''}Z` : null;
}

/** Network faults, timeouts, rate limits and server trouble are worth another try. */
function retryable(status) {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 507);
}

/** Refusals that are not about the body (token, permission, server storage): kept to resend. */
function held(status) {
  return status === 401 || status === 403 || status === 404 || status === 507;
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Retry-After as milliseconds: delay-seconds or an HTTP date. */
function seconds(value) {
  if (!value) return null;
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isNaN(ms) ? null : Math.max(0, ms);
}

async function refusal(response) {
  const problem = await response.json().catch(() => ({}));
  return new SnapkeepError(response.status, problem.code, problem.error || `HTTP ${response.status}`);
}

function size(text) {
  return new Blob([text]).size;
}

/** A 53-bit digest (cyrb53) and the length: tells our own body from another writer's. */
function digest(text) {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `${text.length}:${(4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)}`;
}

function storage() {
  try {
    return globalThis.localStorage;
  } catch {
    return null; // blocked (sandboxed frames, some privacy settings)
  }
}

function timeout() {
  return AbortSignal.timeout?.(TIMEOUT);
}

// --- end-to-end encryption ---
// The inspection page embeds this part as it is (the server writes it into the page), so the
// two read envelopes the same way. Format and threat model: docs/encryption.md.

/** PBKDF2-HMAC-SHA-256 rounds for a new salt: OWASP's 2023 recommendation for that hash. */
const PBKDF2_ITERATIONS = 600000;

/** Whether `value` is an envelope: what an encrypting client stores instead of the state. */
export function isEnvelope(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && 'snapkeep-encrypted' in value;
}

/** Key-derivation parameters for a new envelope: PBKDF2-SHA-256 with a random 16-byte salt. */
export function newKdf() {
  const salt = base64(crypto.getRandomValues(new Uint8Array(16)));
  return { name: 'PBKDF2', hash: 'SHA-256', iterations: PBKDF2_ITERATIONS, salt };
}

/** The AES-256-GCM key that `passphrase` and an envelope's `kdf` give (slow on purpose). */
export async function deriveKey(passphrase, kdf) {
  // The rounds are capped: an envelope must not make a client work for minutes.
  const rounds = kdf?.iterations;
  if (kdf?.name !== 'PBKDF2' || kdf.hash !== 'SHA-256' || !(rounds >= 1 && rounds <= 10000000) || typeof kdf.salt !== 'string') {
    throw envelopeError('unsupported_envelope', `this client cannot derive a key with ${JSON.stringify(kdf)}`);
  }
  const material = await crypto.subtle.importKey('raw', new TextEncoder().encode(passphrase), 'PBKDF2', false, ['deriveKey']);
  const params = { name: 'PBKDF2', hash: 'SHA-256', salt: unbase64(kdf.salt), iterations: kdf.iterations };
  return crypto.subtle.deriveKey(params, material, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
}

/**
 * `text` encrypted with `key` (AES-256-GCM, a random 12-byte IV) as an envelope's JSON text.
 * `kdf` says how the key was made (null: the app gave the key itself). The envelope's head
 * (format version, cipher, kdf) is authenticated with the text, so it cannot be changed either.
 */
export async function seal(text, key, kdf) {
  const head = { 'snapkeep-encrypted': 1, cipher: 'AES-256-GCM', kdf };
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const params = { name: 'AES-GCM', iv, additionalData: envelopeHead(head) };
  const data = await crypto.subtle.encrypt(params, key, new TextEncoder().encode(text));
  return JSON.stringify({ ...head, iv: base64(iv), data: base64(new Uint8Array(data)) });
}

/** The text inside an envelope; an error with code `wrong_passphrase` when `key` does not open it. */
export async function unseal(envelope, key) {
  if (envelope['snapkeep-encrypted'] !== 1 || envelope.cipher !== 'AES-256-GCM') {
    throw envelopeError('unsupported_envelope', `an envelope of format ${JSON.stringify(envelope['snapkeep-encrypted'])} with cipher ${JSON.stringify(envelope.cipher)}: this client reads format 1, AES-256-GCM`);
  }
  let plain;
  try {
    const params = { name: 'AES-GCM', iv: unbase64(envelope.iv), additionalData: envelopeHead(envelope) };
    plain = await crypto.subtle.decrypt(params, key, unbase64(envelope.data));
  } catch {
    throw envelopeError('wrong_passphrase', 'cannot decrypt the snapshot: wrong passphrase or key (or the stored envelope was altered)');
  }
  return new TextDecoder().decode(plain);
}

/** The authenticated head: these fields, in this order, as compact JSON in UTF-8. */
function envelopeHead({ 'snapkeep-encrypted': version, cipher, kdf }) {
  const k = kdf && { name: kdf.name, hash: kdf.hash, iterations: kdf.iterations, salt: kdf.salt };
  return new TextEncoder().encode(JSON.stringify({ 'snapkeep-encrypted': version, cipher, kdf: k }));
}

function envelopeError(code, message) {
  return Object.assign(new Error(message), { code });
}

function base64(bytes) {
  if (bytes.toBase64) return bytes.toBase64(); // native where the browser has it: much faster
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function unbase64(text) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// --- end of end-to-end encryption ---

// --- mirroring browser storage ---

/**
 * localStorage as a readable document part: a value that is JSON (and written back as the very
 * same text) under "localStorage", as JSON; any other value under "localStorageText", as its
 * text. Keys in order. snapkeep's own keys are never part of it.
 */
export function readLocalStorage(keys = true) {
  const ls = storage();
  const json = {};
  const text = {};
  if (!ls) return {};
  const names = [];
  for (let i = 0; i < ls.length; i++) names.push(ls.key(i));
  for (const key of names.sort()) {
    if (key === null || key.startsWith('snapkeep') || !matches(keys, key)) continue;
    const value = ls.getItem(key);
    if (value === null) continue;
    if (isJson(value)) json[key] = JSON.parse(value);
    else text[key] = value;
  }
  const doc = {};
  if (Object.keys(json).length) doc.localStorage = json;
  if (Object.keys(text).length) doc.localStorageText = text;
  return doc;
}

/** The mirrored keys and values as they are, cheap to compare: what the poll looks at. */
function rawLocalStorage(keys) {
  const ls = storage();
  const parts = [];
  for (let i = 0; ls && i < ls.length; i++) {
    const key = ls.key(i);
    if (key !== null && !key.startsWith('snapkeep') && matches(keys, key)) parts.push(key, ls.getItem(key));
  }
  return JSON.stringify(parts);
}

/** Whether `key` is one of `keys` (names, a trailing * for a prefix, or true for all). */
function matches(keys, key) {
  if (keys === true) return true;
  return keys.some((pattern) => (pattern.endsWith('*') ? key.startsWith(pattern.slice(0, -1)) : key === pattern));
}

/** Text that JSON.parse reads and JSON.stringify writes back byte for byte. */
function isJson(text) {
  try {
    return JSON.stringify(JSON.parse(text)) === text;
  } catch {
    return false;
  }
}

/**
 * Puts a mirrored document back: its localStorage keys (those `what.keys` names) and its
 * IndexedDB databases (those `what.databases` names; each replaced whole). A document of
 * mirrorLocalStorage before the readable format ({ key: "text" }) is read too.
 */
export async function applyMirror(doc, { keys = true, databases = [] } = {}) {
  if (doc === null || typeof doc !== 'object') return;
  const ls = storage();
  const readable = 'localStorage' in doc || 'localStorageText' in doc || 'indexedDB' in doc;
  const texts = readable ? { ...doc.localStorageText } : doc;
  const values = readable ? { ...doc.localStorage } : {};
  for (const [key, value] of Object.entries(values)) if (matches(keys, key)) ls?.setItem(key, JSON.stringify(value));
  for (const [key, value] of Object.entries(texts)) if (typeof value === 'string' && matches(keys, key)) ls?.setItem(key, value);
  for (const [name, data] of Object.entries((readable && doc.indexedDB) || {})) {
    if (databases.includes(name)) await importDatabase(name, data);
  }
}

/** Whether none of the mirrored keys is in localStorage and none of the databases holds a record. */
async function isEmpty({ keys, databases }) {
  if (Object.keys(readLocalStorage(keys)).length) return false;
  for (const data of Object.values(await readDatabases(databases))) {
    if (Object.values(data.stores).some((store) => store.records.length)) return false;
  }
  return true;
}

/** The named databases that exist, exported: { name: { version, stores } }. */
async function readDatabases(names) {
  const out = {};
  if (!names.length || !globalThis.indexedDB) return out;
  const existing = new Set((await indexedDB.databases()).map((db) => db.name));
  for (const name of names) if (existing.has(name)) out[name] = await exportDatabase(name);
  return out;
}

/**
 * One database as JSON: its version, and per object store its key path, key generator,
 * indexes and records (values, and keys where they are not in the values), in key order.
 * Values that JSON has no words for are written as tagged objects (see encode).
 */
async function exportDatabase(name) {
  const db = await request(IDB_OPEN.call(indexedDB, name));
  db.onversionchange = () => db.close(); // the app upgrades it: let go at once
  try {
    const out = { version: db.version, stores: {} };
    const names = [...db.objectStoreNames];
    if (!names.length) return out;
    const tx = db.transaction(names, 'readonly');
    for (const storeName of names) {
      const store = tx.objectStore(storeName);
      const indexes = [...store.indexNames].map((indexName) => {
        const index = store.index(indexName);
        return { name: indexName, keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry };
      });
      const [keys, values] = await Promise.all([request(store.getAllKeys()), request(store.getAll())]);
      const inline = store.keyPath !== null;
      out.stores[storeName] = {
        keyPath: store.keyPath,
        autoIncrement: store.autoIncrement,
        indexes,
        records: values.map((value, i) => (inline ? { value: encode(value) } : { key: encode(keys[i]), value: encode(value) })),
      };
    }
    return out;
  } finally {
    db.close();
  }
}

/** Replaces the database `name` with an exported one. */
async function importDatabase(name, data) {
  await request(indexedDB.deleteDatabase(name));
  const opening = IDB_OPEN.call(indexedDB, name, data.version);
  opening.onupgradeneeded = () => {
    const db = opening.result;
    for (const [storeName, spec] of Object.entries(data.stores ?? {})) {
      const options = { autoIncrement: Boolean(spec.autoIncrement) };
      if (spec.keyPath !== null && spec.keyPath !== undefined) options.keyPath = spec.keyPath;
      const store = db.createObjectStore(storeName, options);
      for (const index of spec.indexes ?? []) {
        store.createIndex(index.name, index.keyPath, { unique: index.unique, multiEntry: index.multiEntry });
      }
      for (const record of spec.records ?? []) {
        if ('key' in record) store.put(decode(record.value), decode(record.key));
        else store.put(decode(record.value));
      }
    }
  };
  const db = await request(opening);
  db.close();
}

/**
 * A structured-clone value as JSON: a Date as {"$date": ISO text}, bytes (ArrayBuffer, a typed
 * array, DataView) as {"$bytes": base64, "$type": name}, a Map as {"$map": [[k, v], …]}, a Set
 * as {"$set": […]}, undefined as {"$undefined": true}, and an object with a key starting with
 * "$" as {"$object": {…}}. A Blob or File cannot be read synchronously and is refused.
 */
export function encode(value) {
  if (value === undefined) return { $undefined: true };
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'bigint') return { $bigint: value.toString() };
    if (typeof value === 'number' && !Number.isFinite(value)) return { $number: String(value) };
    return value;
  }
  if (Array.isArray(value)) return value.map(encode);
  if (value instanceof Date) return { $date: Number.isNaN(value.getTime()) ? null : value.toISOString() };
  if (value instanceof ArrayBuffer) return { $bytes: base64(new Uint8Array(value)), $type: 'ArrayBuffer' };
  if (ArrayBuffer.isView(value)) {
    const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return { $bytes: base64(bytes), $type: value.constructor.name };
  }
  if (value instanceof Map) return { $map: [...value].map(([k, v]) => [encode(k), encode(v)]) };
  if (value instanceof Set) return { $set: [...value].map(encode) };
  if (typeof Blob === 'function' && value instanceof Blob) throw new TypeError('snapkeep: a Blob in IndexedDB cannot be mirrored');
  const out = {};
  let tagged = false;
  for (const [key, inner] of Object.entries(value)) {
    if (key.startsWith('$')) tagged = true;
    out[key] = encode(inner);
  }
  return tagged ? { $object: out } : out;
}

/** The value `encode` wrote. */
export function decode(value) {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(decode);
  if ('$undefined' in value) return undefined;
  if ('$bigint' in value) return BigInt(value.$bigint);
  if ('$number' in value) return Number(value.$number);
  if ('$date' in value) return new Date(value.$date ?? NaN);
  if ('$bytes' in value) {
    const bytes = unbase64(value.$bytes);
    if (value.$type === 'ArrayBuffer') return bytes.buffer;
    if (value.$type === 'DataView') return new DataView(bytes.buffer);
    const Type = globalThis[value.$type];
    return typeof Type === 'function' ? new Type(bytes.buffer) : bytes;
  }
  if ('$map' in value) return new Map(value.$map.map(([k, v]) => [decode(k), decode(v)]));
  if ('$set' in value) return new Set(value.$set.map(decode));
  const source = '$object' in value ? value.$object : value;
  const out = {};
  for (const [key, inner] of Object.entries(source)) out[key] = decode(inner);
  return out;
}

/** An IDBRequest as a promise. */
function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

// IndexedDB as the page found it: the mirror's own reads must not look like the app's writes.
const IDB_OPEN = globalThis.IDBFactory?.prototype.open;
const IDB_TRANSACTION = globalThis.IDBDatabase?.prototype.transaction;
const STORAGE_WRITES = ['setItem', 'removeItem', 'clear'];
const STORAGE_ORIGINAL = Object.fromEntries(STORAGE_WRITES.map((name) => [name, globalThis.Storage?.prototype[name]]));
/** What each running mirror wants to hear of: { keys, databases, localStorage(), indexedDB() }. */
const watchers = new Set();

/**
 * Calls `on.localStorage()` when a mirrored key may have changed (a write through Storage's
 * methods at once, a property assignment within `pollMs`, another tab's write by its `storage`
 * event), and `on.indexedDB()` when a write transaction on a mirrored database has committed
 * (or one was opened, upgrades included). Returns a function that stops it.
 */
function watch({ keys, databases }, { pollMs, localStorage: lsChanged, indexedDB: idbChanged }) {
  const watcher = { keys, databases, lsChanged, idbChanged };
  if (!watchers.size) hook();
  watchers.add(watcher);
  let seen = rawLocalStorage(keys);
  const poll = setInterval(() => {
    const now = rawLocalStorage(keys);
    if (now !== seen) {
      seen = now;
      lsChanged();
    }
  }, pollMs);
  const onStorage = (event) => {
    if (event.key === null || matches(keys, event.key)) lsChanged();
  };
  globalThis.addEventListener?.('storage', onStorage);
  return () => {
    clearInterval(poll);
    globalThis.removeEventListener?.('storage', onStorage);
    watchers.delete(watcher);
    if (!watchers.size) unhook();
  };
}

/** Wraps the writes of Storage and IndexedDB, once for all mirrors. */
function hook() {
  const proto = globalThis.Storage?.prototype;
  for (const name of STORAGE_WRITES) {
    if (!proto?.[name]) continue;
    const original = STORAGE_ORIGINAL[name];
    proto[name] = function (...args) {
      const result = original.apply(this, args);
      if (this === storage()) {
        for (const w of watchers) if (name === 'clear' || matches(w.keys, String(args[0]))) queueMicrotask(w.lsChanged);
      }
      return result;
    };
  }
  if (IDB_OPEN && IDB_TRANSACTION) {
    IDBFactory.prototype.open = function (name, ...rest) {
      const opening = IDB_OPEN.call(this, name, ...rest);
      const mirrored = [...watchers].filter((w) => w.databases.includes(name));
      if (mirrored.length) opening.addEventListener('success', () => mirrored.forEach((w) => w.idbChanged()));
      return opening;
    };
    IDBDatabase.prototype.transaction = function (...args) {
      const tx = IDB_TRANSACTION.apply(this, args);
      if (tx.mode !== 'readonly') {
        const mirrored = [...watchers].filter((w) => w.databases.includes(this.name));
        if (mirrored.length) tx.addEventListener('complete', () => mirrored.forEach((w) => w.idbChanged()));
      }
      return tx;
    };
  }
}

function unhook() {
  const proto = globalThis.Storage?.prototype;
  for (const name of STORAGE_WRITES) if (proto?.[name]) proto[name] = STORAGE_ORIGINAL[name];
  if (IDB_OPEN) IDBFactory.prototype.open = IDB_OPEN;
  if (IDB_TRANSACTION) IDBDatabase.prototype.transaction = IDB_TRANSACTION;
}

/**
 * The IndexedDB queue and last-seen id of one session. A connection closed under it (site data
 * cleared while the page is open) is opened again; where IndexedDB fails, it is kept in memory
 * for this page only, and `onFault` is told once.
 */
class Queue {
  #memory = { rows: [], seq: 0, records: {} };
  #failed = false;

  constructor(key, onFault) {
    this.key = key;
    this.onFault = onFault;
  }

  /** `fn(store)` in a transaction on `store`, or `inMemory(memory)` once IndexedDB failed. */
  async #run(store, mode, fn, inMemory) {
    for (let attempt = 0; !this.#failed; attempt++) {
      let db;
      try {
        db = await open();
        return await done(db, store, mode, fn);
      } catch (error) {
        forget(db);
        if (attempt === 0 && error?.name === 'InvalidStateError') continue; // closed: reopen
        this.#failed = true;
        this.onFault?.(error);
      }
    }
    return inMemory(this.#memory);
  }

  /** Queues `body`, saved by tab `tab` on top of snapshot `base`. */
  add(body, tab, base) {
    return this.#run(QUEUE, 'readwrite', (s) => s.add({ key: this.key, body, at: Date.now(), tab, base }),
      (m) => void m.rows.push({ seq: ++m.seq, body, tab, base }));
  }

  /** The queue, oldest first: [{ seq, body, tab, base }]. */
  rows() {
    return this.#run(QUEUE, 'readonly', (s) => {
      const rows = [];
      this.#each(s, (cursor) => rows.push({ ...cursor.value, seq: cursor.primaryKey }));
      return { result: rows };
    }, (m) => m.rows.map((row) => ({ ...row })));
  }

  /** Calls fn(cursor) on each row of this session, oldest first. */
  #each(store, fn) {
    const request = store.index('key').openCursor(IDBKeyRange.only(this.key));
    request.onsuccess = () => {
      const cursor = request.result;
      if (cursor) {
        fn(cursor);
        cursor.continue();
      }
    };
  }

  count() {
    return this.#run(QUEUE, 'readonly', (s) => s.index('key').count(this.key), (m) => m.rows.length);
  }

  remove(seq) {
    return this.#run(QUEUE, 'readwrite', (s) => s.delete(seq),
      (m) => void (m.rows = m.rows.filter((row) => row.seq !== seq)));
  }

  /** Removes the rows `which(row)` picks. */
  clear(which) {
    return this.#run(QUEUE, 'readwrite', (s) => this.#each(s, (c) => which(c.value) && c.delete()),
      (m) => void (m.rows = m.rows.filter((row) => !which(row))));
  }

  /** Row `seq` (if any) was saved as `base`: it goes, the rest of tab `tab` goes on top of it. Resolves to the count. */
  landed(seq, tab, base) {
    const update = (row) => (row.tab === tab ? { ...row, base } : row);
    return this.#run(QUEUE, 'readwrite', (s) => {
      if (seq !== undefined) s.delete(seq);
      this.#each(s, (c) => c.value.tab === tab && c.update(update(c.value)));
      return s.index('key').count(this.key);
    }, (m) => (m.rows = m.rows.filter((row) => row.seq !== seq).map(update)).length);
  }

  /** Reads the last-seen id, or stores it when given one (or null). */
  meta(id) {
    return this.#record(this.key, id);
  }

  /** Reads the keys this browser remembers for the session ({ salt: CryptoKey }), or stores them. */
  keys(map) {
    return this.#record(`${this.key} keys`, map);
  }

  #record(name, value) {
    if (value === undefined) return this.#run(META, 'readonly', (s) => s.get(name), (m) => m.records[name]);
    return this.#run(META, 'readwrite', (s) => void s.put(value, name), (m) => void (m.records[name] = value));
  }
}

/**
 * The keys of one session's envelopes: a CryptoKey the app gave, or keys from a passphrase, one
 * per salt, each derived once (PBKDF2 is slow on purpose). New envelopes take the salt of the
 * session's newest envelope, so every device derives one key. A key is proven once it opened
 * an envelope of the session, or sealed one after the check; with `remember`, proven keys are
 * kept in IndexedDB as non-extractable CryptoKeys (with their kdf): the passphrase is asked
 * once per browser, a browser offline seals under the session's salt, and no script can read
 * a key's bytes.
 */
class Keyring {
  #given; // a CryptoKey
  #passphrase; // a string, or a function that asks for one
  #asked = null; // promise: what the function answered
  #derived = new Map(); // salt → promise of its key
  #proven = new Set(); // salts whose key is known to be the session's
  #queue; // where proven keys are remembered ([{ kdf, key }], newest last), or null
  kdf = null; // how the key of new envelopes is made: the session's newest's, or a new one
  generation = 0; // grows with each change of keys: what was sealed before is sealed again

  constructor({ passphrase, key, remember = false }, queue) {
    if (!passphrase && !key) throw new TypeError('snapkeep: encryption needs a passphrase or a key');
    this.#given = key;
    this.#passphrase = passphrase;
    this.#queue = remember ? queue : null;
  }

  /** Whether the app gave the key (there is no passphrase to change). */
  get given() {
    return Boolean(this.#given);
  }

  /** `text` sealed; `trusted`: the keys were checked against the session, so this one is its. */
  async seal(text, trusted) {
    if (this.#given) return seal(text, this.#given, null);
    this.kdf ??= (await this.#remembered()).at(-1)?.kdf ?? newKdf();
    const { kdf } = this;
    const key = await this.#key(kdf);
    const sealed = await seal(text, key, kdf);
    if (trusted) await this.#prove(kdf, key);
    return sealed;
  }

  /** The text of an envelope; `newest`: the session's latest, whose salt new envelopes take. */
  async open(envelope, newest = false) {
    const generation = this.generation;
    const kdf = envelope.kdf ?? null;
    if (!kdf !== Boolean(this.#given)) {
      throw envelopeError('wrong_passphrase', kdf
        ? 'this snapshot was encrypted with a passphrase, and this client was given a key'
        : 'this snapshot was encrypted with a key, and this client was given a passphrase');
    }
    if (!kdf) return unseal(envelope, this.#given);
    let text;
    try {
      text = await unseal(envelope, await this.#key(kdf));
    } catch (error) {
      // A key this browser remembered from before the passphrase changed: ask for it.
      if (error.code !== 'wrong_passphrase' || !(await this.#forget(kdf.salt))) throw error;
      text = await unseal(envelope, await this.#key(kdf));
    }
    if (generation === this.generation) {
      await this.#prove(kdf, await this.#key(kdf));
      if (newest) this.kdf = kdf;
    }
    return text;
  }

  /** A new passphrase: a new salt. Keys of older salts stay here, for the snapshots sealed before. */
  change(passphrase) {
    this.#passphrase = passphrase;
    this.#asked = null;
    this.kdf = newKdf();
    this.generation++;
    this.#queue?.keys([]);
  }

  /** After a wrong passphrase: forgets keys not proven and the function's answer; `passphrase` replaces it. */
  reset(passphrase) {
    if (passphrase) this.#passphrase = passphrase;
    this.#asked = null;
    for (const salt of [...this.#derived.keys()]) if (!this.#proven.has(salt)) this.#derived.delete(salt);
    this.kdf = null;
    this.generation++;
  }

  #key(kdf) {
    let key = this.#derived.get(kdf.salt);
    if (!key) {
      key = (async () => {
        const remembered = (await this.#remembered()).find((r) => r.kdf.salt === kdf.salt);
        if (remembered) this.#proven.add(kdf.salt);
        return remembered?.key ?? deriveKey(await this.#secret(), kdf);
      })();
      this.#derived.set(kdf.salt, key);
      key.catch(() => this.#derived.get(kdf.salt) === key && this.#derived.delete(kdf.salt));
    }
    return key;
  }

  #secret() {
    if (typeof this.#passphrase !== 'function') return this.#passphrase;
    this.#asked ??= Promise.resolve(this.#passphrase()).then((answer) => {
      if (!answer) throw envelopeError('no_passphrase', 'no passphrase was given: backups stay on this device until one is');
      return String(answer);
    });
    this.#asked.catch(() => (this.#asked = null));
    return this.#asked;
  }

  async #remembered() {
    const kept = await this.#queue?.keys();
    return Array.isArray(kept) ? kept : [];
  }

  async #prove(kdf, key) {
    if (this.#proven.has(kdf.salt)) return;
    this.#proven.add(kdf.salt);
    if (!this.#queue) return;
    const others = (await this.#remembered()).filter((r) => r.kdf.salt !== kdf.salt);
    await this.#queue.keys([...others, { kdf, key }].slice(-4));
  }

  /** Forgets a remembered key that no longer opens; false when it was not remembered. */
  async #forget(salt) {
    const kept = await this.#remembered();
    if (!kept.some((r) => r.kdf.salt === salt)) return false;
    await this.#queue.keys(kept.filter((r) => r.kdf.salt !== salt));
    this.#derived.delete(salt);
    this.#proven.delete(salt);
    return true;
  }
}

let database;
function open() {
  if (database) return database;
  const opening = new Promise((resolve, reject) => {
    const request = indexedDB.open('snapkeep', 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(QUEUE, { autoIncrement: true }).createIndex('key', 'key');
      request.result.createObjectStore(META);
    };
    request.onsuccess = () => {
      const db = request.result;
      // Closed by the browser (site data cleared), or another page upgrades: open anew next time.
      db.onclose = db.onversionchange = () => forget(db);
      resolve(db);
    };
    request.onerror = () => reject(request.error);
  });
  opening.catch(() => database === opening && (database = null));
  return (database = opening);
}

function forget(db) {
  db?.close();
  database = null;
}

/** Runs `fn` in a transaction; resolves, once it commits, to the result of the request fn returns. */
function done(db, store, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const request = fn(tx.objectStore(store));
    tx.oncomplete = () => resolve(request?.result);
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

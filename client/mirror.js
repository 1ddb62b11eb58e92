// snapkeep-mirror.js: backup and restore for an unmodified page, from one classic script tag.
// The server serves this file after snapkeep.js (the client module, its `export`s dropped),
// both inside one function, at GET /snapkeep-mirror.js and GET {base}/_snapkeep-mirror.js.
//
//   <script src="https://backup.example/snapkeep-mirror.js" data-session="user-42"></script>
//
// Put it first in <head>. Attributes: data-url (the API base; default: this script's origin
// plus /api/backup), data-session (default: an id made for this browser, see below), data-keys
// (localStorage keys, comma-separated, a trailing * for a prefix; default: every key),
// data-indexeddb (IndexedDB databases to mirror, comma-separated), data-token, data-conflict
// (ask, local or server; default ask), data-live ("off": no change feed), data-badge ("off"
// hides the status badge), data-passphrase-prompt (end-to-end encryption: the text of the
// prompt that asks for the passphrase, once per browser; see docs/encryption.md).
//
// How an emptied browser gets its state back before the page's own scripts run: this script
// runs before them and reads localStorage synchronously. A browser that has never synced this
// session here (no marker key) and holds none of the mirrored keys stops loading the page
// (window.stop(): the scripts after this one never run), fetches the latest snapshot, puts it
// into localStorage and IndexedDB, and reloads. The page then starts on the restored state.
// Every other load starts the page at once.

function mirrorPage(script) {
  if (!script) {
    console.error('snapkeep-mirror.js: load it with a plain <script src> tag (not as a module, not injected late)');
    return;
  }
  const data = script.dataset;
  const url = (data.url || new URL('/api/backup', script.src).href).replace(/\/+$/, '');
  const list = (text) => (text ?? '').split(',').map((item) => item.trim()).filter(Boolean);
  const what = {
    keys: data.keys ? list(data.keys) : true,
    databases: list(data.indexeddb),
  };
  const token = data.token || undefined;
  const session = chooseSession(data.session, url);
  if (!session) return;
  const encryption = data.passphrasePrompt === undefined ? undefined : asker(data.passphrasePrompt);
  const marker = `snapkeep-mirror ${url} ${session.id}`;
  const seen = localStorage.getItem(marker);
  if (seen === null) {
    if (session.made) {
      localStorage.setItem(marker, 'new'); // a new id has nothing to restore
    } else if (Object.keys(readLocalStorage(what.keys)).length) {
      localStorage.setItem(marker, 'local'); // state here already: it is backed up, not replaced
    } else if (sessionStorage.getItem(`${marker} tried`) === null) {
      restoreThenReload({ url, session: session.id, token, what, marker, encryption });
      return;
    }
  }
  start({ url, session, token, what, marker, data, encryption });
}

/**
 * End-to-end encryption with a passphrase typed into the browser's prompt when a key is first
 * needed; the key it gives is remembered by this browser (IndexedDB, not extractable).
 */
function asker(text) {
  const question = text || 'Passphrase of your backup';
  let asked = 0;
  return {
    remember: true,
    passphrase: () => prompt(asked++ ? `${question}\n(The last one did not open the backup.)` : question),
  };
}

/** The latest snapshot; a wrong passphrase is asked again, twice. */
async function readLatest(client) {
  try {
    return await client.latest();
  } catch (error) {
    if (error.code !== 'wrong_passphrase') throw error;
    for (let tries = 0; tries < 2; tries++) if (await client.unlock()) return client.latest();
    throw error;
  }
}

/**
 * The session: data-session; else one given by a recovery link (#snapkeep=<id> in the
 * address), kept from now on; else the id this browser made before; else a new one, made now
 * (`made`). Null, after saying why, when the attribute is not a valid id.
 */
function chooseSession(given, url) {
  const valid = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  if (given) {
    if (valid.test(given)) return { id: given, made: false, given: true };
    console.error(`snapkeep-mirror.js: data-session ${JSON.stringify(given)} is not a session id (1 to 128 of A-Z a-z 0-9 . _ -)`);
    return null;
  }
  const key = `snapkeep-mirror session ${url}`;
  const recovery = /(?:^#|&)snapkeep=([^&]+)/.exec(location.hash);
  if (recovery && valid.test(decodeURIComponent(recovery[1]))) {
    const id = decodeURIComponent(recovery[1]);
    localStorage.setItem(key, id);
    const rest = location.hash.replace(recovery[0], '').replace(/^#&?/, '');
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    return { id, made: false, given: false };
  }
  const known = localStorage.getItem(key);
  if (known && valid.test(known)) return { id: known, made: false, given: false };
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const id = `b${[...bytes].map((b) => b.toString(36).padStart(2, '0')).join('')}`;
  localStorage.setItem(key, id);
  return { id, made: true, given: false };
}

/**
 * The browser holds none of the page's state: stop the page, put the latest snapshot back
 * (unless the databases turn out to hold records), and load the page again. Whatever happens,
 * the next load starts the page: a marker (or, when the server could not be asked, a mark in
 * sessionStorage) says the check was made.
 */
function restoreThenReload({ url, session, token, what, marker, encryption }) {
  window.stop();
  const note = document.createElement('p');
  note.textContent = 'Restoring your data…';
  note.style.cssText = 'font: 16px system-ui, sans-serif; margin: 2rem;';
  (document.body ?? document.documentElement).append(note);
  (async () => {
    try {
      if (!(await isEmpty(what))) {
        localStorage.setItem(marker, 'local');
      } else {
        const client = connect({ url, session, token, encryption });
        const latest = await readLatest(client);
        if (latest) {
          await applyMirror(latest.state, what);
          await client.adopt(latest); // its id is the base of this browser's next save
        }
        client.close();
        localStorage.setItem(marker, latest ? latest.id : 'none');
      }
    } catch (error) {
      console.warn(`snapkeep-mirror.js: could not restore (${error.message}); the page starts as it is`);
      sessionStorage.setItem(`${marker} tried`, '1');
    }
    location.reload();
  })();
}

/** The page starts; every change of its state is backed up from now on. */
function start({ url, session, token, what, marker, data, encryption }) {
  const policy = ['local', 'server'].includes(data.conflict) ? data.conflict : 'ask';
  let badge = null;
  const takeServer = async () => {
    const state = await client.adopt();
    mirror.stop();
    await applyMirror(state, what);
    location.reload();
  };
  const client = connect({
    url,
    session: session.id,
    token,
    encryption,
    live: data.live !== 'off',
    onConflict: (conflict) => {
      if (policy === 'local') return conflict.local;
      if (policy === 'server') takeServer();
      return undefined; // ask: the badge offers both
    },
  });
  const mirror = client.mirror({ localStorage: what.keys, indexedDB: what.databases, restore: false });
  client.on('saved', (saved) => localStorage.setItem(marker, saved.id));
  // Another device's newer state is in storage now: the page starts again on it.
  client.on('applied', (applied) => {
    localStorage.setItem(marker, applied.id);
    location.reload();
  });
  if (data.badge !== 'off') {
    badge = new Badge(client, session, { keep: () => client.resolve(), take: takeServer });
  } else if (policy === 'ask') {
    client.on('conflict', () => console.warn('snapkeep-mirror.js: another device saved a newer state; with data-badge="off", set data-conflict="local" or "server" to settle it'));
  }
  globalThis.snapkeepMirror = { client, session: session.id, badge };
}

/** A small status badge in a corner of the page: saved, offline, a conflict to settle. */
class Badge {
  #root;
  #text;
  #actions;

  constructor(client, session, { keep, take }) {
    const host = document.createElement('snapkeep-badge');
    host.style.cssText = 'position: fixed; right: 8px; bottom: 8px; z-index: 2147483647;';
    const root = host.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>
      div { font: 12px/1.3 system-ui, sans-serif; background: #fff; color: #222; border: 1px solid #ccc;
        border-radius: 6px; padding: 4px 8px; box-shadow: 0 1px 3px #0002; max-width: 20rem; }
      [data-status=saved] b { color: #1a7f37; } [data-status=offline] b, [data-status=conflict] b { color: #9a6700; }
      [data-status=error] b { color: #cf222e; } button { font: inherit; margin: 4px 4px 0 0; }
      small { display: block; color: #555; overflow-wrap: anywhere; }
    </style><div data-status="idle"><b>●</b> <span>backup</span><section></section></div>`;
    this.#root = root.querySelector('div');
    this.#text = root.querySelector('span');
    this.#actions = root.querySelector('section');
    const show = () => (document.body ?? document.documentElement).append(host);
    if (document.body) show();
    else addEventListener('DOMContentLoaded', show, { once: true });
    const set = (status, text) => {
      this.#root.dataset.status = status;
      this.#text.textContent = text;
      this.#actions.replaceChildren();
    };
    client.on('saving', () => set('saving', 'backing up…'));
    client.on('saved', () => set('saved', 'backed up'));
    client.on('offline', (d) => set('offline', `offline, ${d.queued || 'a'} change${d.queued > 1 ? 's' : ''} waiting`));
    client.on('error', (d) => {
      set('error', `backup refused: ${d.message}`);
      if (d.code === 'wrong_passphrase' || d.code === 'no_passphrase') this.#button('Enter the passphrase', () => client.unlock());
    });
    client.on('conflict', () => {
      set('conflict', 'another device saved a newer state');
      this.#button('Keep this one', keep);
      this.#button("Use the other device's", take);
    });
    if (!session.given) {
      // A session this browser made is the only way back to its backup once the browser is
      // wiped: offer the link that brings it back.
      this.#root.title = 'snapkeep backup';
      this.#root.addEventListener('click', (event) => {
        if (event.target.tagName === 'BUTTON') return;
        const link = `${location.origin}${location.pathname}${location.search}#snapkeep=${encodeURIComponent(session.id)}`;
        const recovery = document.createElement('small');
        recovery.textContent = `Recovery link (keep it: it brings this backup back in a wiped browser): ${link}`;
        this.#actions.replaceChildren(recovery);
      });
    }
  }

  #button(label, action) {
    const button = document.createElement('button');
    button.textContent = label;
    button.addEventListener('click', () => action());
    this.#actions.append(button);
  }
}

// Last, once every class above is defined; `document.currentScript` is this script's tag while
// it runs.
mirrorPage(document.currentScript);

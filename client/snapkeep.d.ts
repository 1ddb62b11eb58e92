// Types for snapkeep.js, the browser client of a snapkeep server.
// Guide: docs/client.md; end-to-end encryption: docs/encryption.md.

// `T` is the type of the app's state: any value JSON.stringify can write. Default: unknown.

export interface ConnectOptions<T = unknown> {
  /** The API base, e.g. "https://app.example.com/api/backup" (snapkeep's SNAPKEEP_BASE_PATH). */
  url: string;
  /** The session id: 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit. */
  session: string;
  /**
   * A session token (sent as `Authorization: Bearer …`), or a function giving one, called
   * before each request (cache it yourself). Needed when the server has SNAPKEEP_SIGNING_KEY.
   */
  token?: string | (() => string | Promise<string>);
  /** save() sends once saves pause this long. Default 1000. */
  debounceMs?: number;
  /** …but a burst of saves is sent at least this often. Default 10000. */
  maxWaitMs?: number;
  /** gzip bodies of 1 KiB or more where the browser has CompressionStream. Default true. */
  gzip?: boolean;
  /** First wait before resending after a fault; doubles per failure. Default 1000. */
  retryMs?: number;
  /** Longest wait between retries (a Retry-After from the server wins). Default 60000. */
  maxRetryMs?: number;
  /**
   * Called on a conflict. Return a state (a merge of `local` and `server`) to save it on top
   * of the server's latest, as resolve(state) would; return undefined to stay paused.
   * The client only saves the merge: apply it to the app's own state here too (as after
   * adopt()), or the app's next save() of its unmerged state overwrites the other device's changes.
   */
  onConflict?: (conflict: ConflictDetail<T>) => T | undefined | Promise<T | undefined>;
  /**
   * Follow the session's change feed: another tab's or device's new snapshot is a `remote`
   * event. One tab per browser reads the stream and passes it on to the others. Default false.
   */
  live?: boolean;
  /**
   * End-to-end encryption: states leave the page only as AES-256-GCM envelopes, and the
   * server, its disk and its operator never see them. Lose the passphrase, lose the backup.
   */
  encryption?: EncryptionOptions;
}

export interface EncryptionOptions {
  /**
   * The passphrase (PBKDF2-SHA-256, 600,000 rounds, a random 16-byte salt per session), or a
   * function asked for it once, when a key is first needed (again after unlock()).
   * A falsy answer is a `no_passphrase` error.
   */
  passphrase?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  /** Or the key itself: an AES-GCM CryptoKey (256 bits) allowed to encrypt and decrypt. */
  key?: CryptoKey;
  /**
   * Keep derived keys in this browser's IndexedDB (non-extractable: no script can read their
   * bytes), so the passphrase is asked once per browser. Default false.
   */
  remember?: boolean;
}

/** What an encrypting client stores instead of the state (the file holds exactly this JSON). */
export interface Envelope {
  'snapkeep-encrypted': 1;
  cipher: 'AES-256-GCM';
  /** How the key comes from the passphrase; null when the app gave the key. */
  kdf: { name: 'PBKDF2'; hash: 'SHA-256'; iterations: number; salt: string } | null;
  /** Base64 of the 12-byte IV. */
  iv: string;
  /** Base64 of the ciphertext of the state's JSON text, then the 16-byte GCM tag. */
  data: string;
}

export interface Snapshot<T = unknown> {
  id: string;
  /** RFC 3339, from the id. */
  createdAt: string;
  state: T;
  /** "ok", or "mismatch" when the file no longer matches the digest in its id. */
  integrity: string | null;
}

export interface SnapshotInfo {
  id: string;
  createdAt: string;
  bytes: number;
}

export interface SavingDetail {
  bytes: number;
  queued: number;
}

export interface SavedDetail {
  id: string;
  /** 201 written, 200 the same as the latest (deduplicated). */
  status: number;
  /** false: with encryption, the state was the base's, so it was not sent (deduplicated too). */
  sent?: boolean;
  createdAt: string;
  bytes: number;
  deduplicated: boolean;
  /** Saves still waiting in the queue. */
  queued: number;
}

export interface OfflineDetail {
  /** Saves waiting in the queue (IndexedDB). */
  queued: number;
  /** What failed: 0 for no answer (network, timeout), else 408, 429 or 5xx. */
  status: number;
  message: string;
  /** When the queue is tried again (Retry-After when the server gave one). */
  retryInMs: number;
}

export interface ConflictDetail<T = unknown> {
  status: 412;
  /** This tab's newest state, not saved (or, when this tab sent a closed tab's queued save, that save's state). */
  local: T;
  /** The server's latest, written by another tab or device (its text, if it is not JSON). */
  server: T;
  serverId: string;
}

export interface ErrorDetail<T = unknown> {
  /**
   * 401, 403, 404, 507: the save stays queued, and goes with the next save(), flush(), `online`
   * event or page load (refresh the token first). 400, 409, 413, 415 and other 4xx: dropped.
   * 0 with code "storage": IndexedDB failed, the queue is kept in memory for this page only.
   * 0 with code "wrong_passphrase", "no_passphrase" or "unsupported_envelope": with encryption,
   * the keys do not open the session's newest envelope; nothing is sent until unlock().
   */
  status: number;
  code?: string;
  message: string;
  /** The state that was refused, for the app to keep or show (absent when a read failed). */
  state?: T;
  /** Saves in the queue, the refused one included when it was kept (401, 403, 404, 507). */
  queued?: number;
}

export interface ClientEvents<T = unknown> {
  /** With `live`: another writer's new latest. */
  remote: { id: string; createdAt: string; state: T };
  /** A mirror put a `remote` state into the browser's storage. */
  applied: { id: string };
  /** With `live`: snapshots (or the session) went away; `latest` is what is left. */
  deleted: { ids: string[]; latest: { id: string; createdAt: string; bytes: number; sha256: string } | null };
  saving: SavingDetail;
  saved: SavedDetail;
  offline: OfflineDetail;
  conflict: ConflictDetail<T>;
  error: ErrorDetail<T>;
}

export type Status = 'idle' | keyof ClientEvents;

export interface Mirror {
  /** Whether the keys were put back from the latest snapshot (false, with an `offline` or `error` event, if it could not be read). */
  restored: Promise<boolean>;
  /** Saves at once what changed (changes are saved by themselves too; this does not wait for the poll). */
  sync(): void | Promise<void>;
  /** Stops watching (the poll, storage events, IndexedDB commits, page hide). */
  stop(): void;
}

export class Client<T = unknown> extends EventTarget {
  readonly url: string;
  readonly session: string;
  /** 'idle', or the type of the last event. */
  readonly status: Status;
  /** Saves waiting in this browser's IndexedDB queue for the session (every tab's). */
  readonly queued: number;
  /** The open conflict, with the newest local state, or null. */
  readonly conflict: Omit<ConflictDetail<T>, 'status'> | null;

  /** Calls fn with each event's detail; returns a function that stops it. */
  on<K extends keyof ClientEvents>(type: K, fn: (detail: ClientEvents<T>[K]) => void): () => void;
  /** Debounced: only the last state of a burst is sent. Serialized when sent. */
  save(state: T): void;
  /** Sends now; resolves to the id of the snapshot holding the state, or null (queued, conflict, refused). */
  flush(): Promise<string | null>;
  latest(): Promise<Snapshot<T> | null>;
  get(id: string): Promise<Snapshot<T>>;
  /** Newest first. */
  list(): Promise<SnapshotInfo[]>;
  /**
   * If readLocal() gives null/undefined, applies the newest state queued in this browser, or
   * else the server's latest snapshot (then the base of later saves). Resolves to whether it applied one;
   * never rejects for the server's sake: when it cannot be read, resolves false and emits `offline` or `error`.
   */
  restoreIfEmpty(
    readLocal: () => unknown,
    applyState: (state: T, snapshot: Snapshot<T> | null) => void | Promise<void>,
  ): Promise<boolean>;
  /**
   * Takes the server's side of the open conflict (or this snapshot) as the base; drops this
   * tab's unsent saves (and a closed tab's whose conflict this tab raised).
   */
  adopt(snapshot?: Snapshot<T>): Promise<T>;
  /**
   * Saves `state` (default: the local state) over the server's latest, ending the conflict;
   * drops this tab's queued saves (and a closed tab's whose conflict this tab raised).
   */
  resolve(state?: T): Promise<string | null>;
  /**
   * With encryption: seals the latest state again under a new passphrase (a new snapshot, a
   * new salt); later saves use it. Waiting saves go first, under the old one; older snapshots
   * keep theirs. Rejects with code "not_synced" when saves cannot be sent first.
   */
  changePassphrase(passphrase: string): Promise<string | null>;
  /**
   * With encryption, after a wrong or missing passphrase: tries this one (or asks the
   * passphrase function again) and sends what waits. Resolves to whether it opens the session.
   */
  unlock(passphrase?: string): Promise<boolean>;
  /**
   * Backs up browser storage as one readable document (see MirroredDocument) on every change,
   * with no call from the app; puts it back when the browser holds none of it.
   */
  mirror(options?: MirrorOptions): Mirror;
  /** mirror({ localStorage: keys }). */
  mirrorLocalStorage(keys: string[]): Mirror;
  /** Stops timers and listeners. */
  close(): void;
}

/** A refused or failed read (latest, get, list): the server's status and code; status 0 for no answer. */
export class SnapkeepError extends Error {
  readonly status: number;
  readonly code: string | undefined;
}

export function connect<T = unknown>(options: ConnectOptions<T>): Client<T>;

export interface MirrorOptions {
  /** localStorage keys: names, a trailing `*` for a prefix, or true for every key. Default true. */
  localStorage?: string[] | true;
  /** IndexedDB databases, each backed up whole. Default none. */
  indexedDB?: string[];
  /** How often localStorage is compared for changes made by property assignment. Default 500. */
  pollMs?: number;
  /** Put the latest snapshot back first when the browser holds none of the state. Default true. */
  restore?: boolean;
}

/** What a mirror stores: JSON a person can read, and the exact bytes back on restore. */
export interface MirroredDocument {
  /** Values that are JSON (written back as the very same text), as JSON. */
  localStorage?: Record<string, unknown>;
  /** Every other value, as its text. */
  localStorageText?: Record<string, string>;
  /** Each database: its version, and per store its key path, key generator, indexes and records. */
  indexedDB?: Record<string, {
    version: number;
    stores: Record<string, {
      keyPath: string | string[] | null;
      autoIncrement: boolean;
      indexes: { name: string; keyPath: string | string[]; unique: boolean; multiEntry: boolean }[];
      /** `key` only where keys are not in the values. Dates, bytes, Maps and Sets as {"$date": …}, {"$bytes": …, "$type": …}, {"$map": …}, {"$set": …}. */
      records: { key?: unknown; value: unknown }[];
    }>;
  }>;
}

/** A structured-clone value as JSON, the way a mirror stores IndexedDB records. */
export function encode(value: unknown): unknown;
/** The value `encode` wrote. */
export function decode(value: unknown): unknown;
/** localStorage as a mirror stores it. */
export function readLocalStorage(keys?: string[] | true): MirroredDocument;
/** Puts a mirrored document back (localStorage keys, and the named databases, replaced whole). */
export function applyMirror(doc: MirroredDocument, what?: { keys?: string[] | true; databases?: string[] }): Promise<void>;

/** Whether a stored value is an encryption envelope. */
export function isEnvelope(value: unknown): value is Envelope;
/** Parameters for a new passphrase key: PBKDF2-SHA-256, 600,000 rounds, a random salt. */
export function newKdf(): NonNullable<Envelope['kdf']>;
/** The AES-256-GCM key a passphrase and an envelope's `kdf` give. */
export function deriveKey(passphrase: string, kdf: NonNullable<Envelope['kdf']>): Promise<CryptoKey>;
/** `text` encrypted into an envelope's JSON text. */
export function seal(text: string, key: CryptoKey, kdf: Envelope['kdf']): Promise<string>;
/** The text inside an envelope; rejects with `code` "wrong_passphrase" when the key does not fit. */
export function unseal(envelope: Envelope, key: CryptoKey): Promise<string>;

// Weights cache in IndexedDB. Runs in the module worker and on the main thread (no DOM).
//
// A file is stored as an `entries` record plus its bytes in `chunks` ([entryKey, index] -> Uint8Array),
// written as the download streams in, so a 1.7 GB UNet never sits in memory whole. An entry is
// usable only once `complete` is set, which happens in its own transaction after the size and
// sha256 were verified: a crash or closed tab mid-download leaves a partial entry that the next
// ensure() resumes with an HTTP Range request.

import { Sha256 } from './sha256.js';

const CHUNK_BYTES = 4 << 20; // bounded memory per download; also the size of every chunk but a download's last
const DB_VERSION = 1;

export class CacheError extends Error {
  /** code: 'quota' | 'integrity' | 'http' | 'network' | 'aborted'; extra: { url, status?, needed?, available? } */
  constructor(code, message, extra) {
    super(message);
    this.name = 'CacheError';
    this.code = code;
    Object.assign(this, extra);
  }
}

export function formatBytes(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${Math.ceil(n / 1e3)} kB`;
}

export class ModelCache {
  constructor(db) {
    this.db = db;
    this.pending = new Map(); // key -> ensure() promise, so two callers never write one entry at once
  }

  static async open(dbName = 'sdweb-cache') {
    const open = indexedDB.open(dbName, DB_VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore('entries', { keyPath: 'key' }).createIndex('model', 'model');
      db.createObjectStore('chunks');
    };
    const db = await request(open);
    db.onversionchange = () => db.close(); // don't block a newer version opened in another tab
    return new ModelCache(db);
  }

  /** options: { model, revision = 'main', signal, onProgress(loaded, total) } -> { url, size, sha256, revision, commit } */
  ensure(url, options = {}) {
    const key = entryKey(url, options.revision);
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.#download(url, key, options).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending;
  }

  async has(url, revision = 'main') {
    return (await this.#entry(entryKey(url, revision)))?.complete === true;
  }

  // The complete entry's record ({url, size, sha256, ...}), or null: no network.
  async info(url, revision = 'main') {
    const entry = await this.#entry(entryKey(url, revision));
    return entry?.complete ? entry : null;
  }

  async *chunks(url, revision = 'main') {
    yield* this.#chunksOf(await this.#complete(url, revision));
  }

  async bytes(url, revision = 'main') {
    const entry = await this.#complete(url, revision);
    const out = new Uint8Array(entry.size);
    let offset = 0;
    for await (const chunk of this.#chunksOf(entry)) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  async text(url, revision = 'main') {
    return new TextDecoder().decode(await this.bytes(url, revision));
  }

  /**
   * Stores a file made here (a quantised copy of a cached file) under `url`, a name that is
   * never fetched. `chunks`: async iterable of Uint8Array. All or nothing: a failure (quota,
   * a bad input) deletes what was written. -> { url, size, sha256, revision }
   */
  async storeDerived(url, { model = '', revision = 'main' }, chunks) {
    const key = entryKey(url, revision);
    await this.#delete([key]);
    let entry = { key, url, model, revision, size: null, sha256: null, commit: null, complete: false, bytesDone: 0, chunkCount: 0, created: Date.now(), derived: true };
    const sha = new Sha256();
    let buffer = new Uint8Array(CHUNK_BYTES);
    let fill = 0;
    try {
      for await (const data of chunks) {
        sha.update(data);
        for (let pos = 0; pos < data.length; ) {
          const n = Math.min(CHUNK_BYTES - fill, data.length - pos);
          buffer.set(data.subarray(pos, pos + n), fill);
          fill += n;
          pos += n;
          if (fill === CHUNK_BYTES) {
            entry = await this.#append(entry, buffer);
            buffer = new Uint8Array(CHUNK_BYTES);
            fill = 0;
          }
        }
      }
      if (fill) entry = await this.#append(entry, buffer.slice(0, fill));
    } catch (err) {
      await this.#delete([key]);
      if (err.name === 'QuotaExceededError') throw quotaError(url, fileName(url, model), entry.bytesDone + fill, await availableBytes());
      throw err;
    }
    entry = { ...entry, size: entry.bytesDone, sha256: sha.hex(), complete: true };
    await transaction(this.db, ['entries'], (tx) => tx.objectStore('entries').put(entry));
    return summary(entry);
  }

  async remove(url, revision = 'main') {
    await this.#delete([entryKey(url, revision)]);
  }

  async listModels() {
    const entries = await request(this.db.transaction('entries').objectStore('entries').getAll());
    const models = new Map();
    for (const e of entries.filter((e) => e.complete)) {
      const id = `${e.revision}@${e.model}`;
      const m = models.get(id) ?? { model: e.model, revision: e.revision, files: 0, bytes: 0 };
      m.files += 1;
      m.bytes += e.size;
      models.set(id, m);
    }
    return [...models.values()];
  }

  async deleteModel(model) {
    const index = this.db.transaction('entries').objectStore('entries').index('model');
    await this.#delete(await request(index.getAllKeys(model)));
  }

  close() {
    this.db.close();
  }

  async #download(url, key, { model = '', revision = 'main', signal, onProgress }) {
    const name = fileName(url, model);
    let entry = await this.#entry(key);
    if (entry?.complete) return summary(entry);

    let response = await fetchFrom(url, entry?.bytesDone ?? 0, name, signal);
    let remote = remoteInfo(response);
    if (entry && !(response.status === 206 && remote.size === entry.size && remote.sha256 === entry.sha256)) {
      // The server ignored the Range (200), could not satisfy it (416), or the file changed
      // since the partial download: start over.
      await this.#delete([key]);
      entry = null;
      if (response.status !== 200) {
        response.body?.cancel();
        response = await fetchFrom(url, 0, name, signal);
        remote = remoteInfo(response);
      }
    }
    // Until `complete`, size and sha256 are what the server announced (null when it did not).
    entry ??= {
      key, url, model, revision, size: remote.size, sha256: remote.sha256, commit: remote.commit,
      complete: false, bytesDone: 0, chunkCount: 0, created: Date.now(),
    };
    if (entry.size != null) {
      const needed = entry.size - entry.bytesDone;
      const available = await availableBytes();
      // 1% + 1 MiB for IndexedDB's own overhead.
      if (needed * 1.01 + (1 << 20) > available) {
        response.body?.cancel();
        throw quotaError(url, name, needed, available);
      }
    }

    // Resuming: the hash must cover the kept bytes too.
    const sha = new Sha256();
    for await (const chunk of this.#chunksOf(entry)) sha.update(chunk);

    const reader = response.body.getReader();
    let buffer = new Uint8Array(CHUNK_BYTES);
    let fill = 0;
    onProgress?.(entry.bytesDone, entry.size);
    try {
      for (;;) {
        const { done, value } = await reader.read().catch((err) => {
          throw interrupted(url, name, signal, err);
        });
        if (done) break;
        sha.update(value);
        for (let pos = 0; pos < value.length; ) {
          const n = Math.min(CHUNK_BYTES - fill, value.length - pos);
          buffer.set(value.subarray(pos, pos + n), fill);
          fill += n;
          pos += n;
          if (fill === CHUNK_BYTES) {
            entry = await this.#append(entry, buffer);
            buffer = new Uint8Array(CHUNK_BYTES); // IndexedDB clones at put(); a fresh one keeps that obvious
            fill = 0;
          }
        }
        onProgress?.(entry.bytesDone + fill, entry.size);
        if (entry.size != null && entry.bytesDone + fill > entry.size) {
          reader.cancel(); // more bytes than announced: stop filling storage, fail the check below
          break;
        }
      }
      if (fill) entry = await this.#append(entry, buffer.slice(0, fill));
    } catch (err) {
      if (err.name === 'QuotaExceededError') {
        await this.#delete([key]);
        throw quotaError(url, name, entry.size ?? entry.bytesDone + fill, await availableBytes());
      }
      // Interrupted: keep what arrived as a partial entry for the next ensure() to resume.
      if (err instanceof CacheError && fill) entry = await this.#append(entry, buffer.slice(0, fill)).catch(() => entry);
      throw err;
    }

    const got = sha.hex();
    if ((entry.size != null && entry.bytesDone !== entry.size) || (entry.sha256 && got !== entry.sha256)) {
      await this.#delete([key]);
      throw new CacheError(
        'integrity',
        `${name} is corrupt: expected ${entry.size ?? '?'} bytes with sha256 ${entry.sha256 ?? '(not announced)'}, ` +
          `got ${entry.bytesDone} bytes with sha256 ${got}`,
        { url },
      );
    }
    // The completion marker goes last, alone in its transaction.
    entry = { ...entry, size: entry.bytesDone, sha256: got, complete: true };
    await transaction(this.db, ['entries'], (tx) => tx.objectStore('entries').put(entry));
    return summary(entry);
  }

  // One chunk and the entry's updated progress, atomically.
  async #append(entry, data) {
    const next = { ...entry, bytesDone: entry.bytesDone + data.length, chunkCount: entry.chunkCount + 1 };
    await transaction(this.db, ['entries', 'chunks'], (tx) => {
      tx.objectStore('chunks').put(data, [entry.key, entry.chunkCount]);
      tx.objectStore('entries').put(next);
    });
    return next;
  }

  // One chunk per transaction: a long-lived transaction would block writers, and a consumer
  // uploading to the GPU between chunks would let it auto-commit anyway.
  async *#chunksOf(entry) {
    for (let i = 0; i < entry.chunkCount; i++) {
      const chunk = await request(this.db.transaction('chunks').objectStore('chunks').get([entry.key, i]));
      if (!chunk) throw new Error(`chunk ${i} of ${entry.url} is missing from the cache`);
      yield chunk;
    }
  }

  async #entry(key) {
    return request(this.db.transaction('entries').objectStore('entries').get(key));
  }

  async #complete(url, revision) {
    const entry = await this.#entry(entryKey(url, revision));
    if (!entry?.complete) throw new Error(`${url} (revision ${revision}) is not in the cache`);
    return entry;
  }

  async #delete(keys) {
    await transaction(this.db, ['entries', 'chunks'], (tx) => {
      for (const key of keys) {
        tx.objectStore('entries').delete(key);
        tx.objectStore('chunks').delete(IDBKeyRange.bound([key, 0], [key, Infinity]));
      }
    });
  }
}

const entryKey = (url, revision = 'main') => `${revision}@${url}`;

const summary = (e) => ({ url: e.url, size: e.size, sha256: e.sha256, revision: e.revision, commit: e.commit });

// The file's path inside its model ("unet/diffusion_pytorch_model.fp16.safetensors") for messages.
function fileName(url, model) {
  if (model && url.startsWith(model)) return url.slice(model.length).replace(/^\/+/, '');
  return decodeURIComponent(new URL(url, globalThis.location?.href).pathname.split('/').pop());
}

async function fetchFrom(url, from, name, signal) {
  let response;
  try {
    // no-store: the bytes live in IndexedDB; the HTTP cache would keep a second copy of every weight file.
    response = await fetch(url, { signal, cache: 'no-store', headers: from ? { Range: `bytes=${from}-` } : {} });
  } catch (err) {
    throw interrupted(url, name, signal, err);
  }
  if (!response.ok && !(from && response.status === 416)) {
    response.body?.cancel();
    throw new CacheError('http', `Could not download ${name}: HTTP ${response.status}`, { url, status: response.status });
  }
  return response;
}

// What the server says the whole file is, Hugging Face Hub headers first. ETags count as
// sha256 only when they are 64 hex digits (the Hub's small git files carry a sha1 instead).
function remoteInfo(response) {
  const h = response.headers;
  const total = /\/(\d+)$/.exec(h.get('Content-Range') ?? '')?.[1];
  const size = h.get('X-Linked-Size') ?? total ?? (response.status === 200 ? h.get('Content-Length') : null);
  const sha256 = [h.get('X-Linked-Etag'), h.get('ETag')]
    .map((tag) => tag?.replace(/^W\//, '').replaceAll('"', '').toLowerCase())
    .find((tag) => /^[0-9a-f]{64}$/.test(tag ?? ''));
  return { size: size == null ? null : Number(size), sha256: sha256 ?? null, commit: h.get('X-Repo-Commit') };
}

function interrupted(url, name, signal, err) {
  return signal?.aborted
    ? new CacheError('aborted', `Download of ${name} was cancelled`, { url })
    : new CacheError('network', `Download of ${name} failed: ${err?.message ?? err}`, { url });
}

async function availableBytes() {
  if (!navigator.storage?.estimate) return Infinity; // insecure context: no estimate, let the writes decide
  const { quota, usage } = await navigator.storage.estimate();
  return Math.max(0, quota - usage);
}

function quotaError(url, name, needed, available) {
  return new CacheError(
    'quota',
    `Not enough browser storage for ${name}: needs ${formatBytes(needed)}, ${formatBytes(available)} available`,
    { url, needed, available },
  );
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

// Run `body` in a transaction and wait until it commits; a failed request aborts the whole
// transaction, and tx.error then says why (QuotaExceededError among others).
function transaction(db, stores, body) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(stores, 'readwrite');
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new DOMException('transaction aborted', 'AbortError'));
    body(tx);
  });
}

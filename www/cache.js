// Weights cache in IndexedDB. Runs in the module worker and on the main thread (no DOM).
//
// A file is stored as an `entries` record plus its bytes in `chunks` ([entryKey, index] -> Uint8Array),
// written as the download streams in, so a 1.7 GB UNet never sits in memory whole. An entry is
// usable only once `complete` is set, which happens in its own transaction after the size and
// sha256 were verified: a crash or closed tab mid-download leaves a partial entry that the next
// ensure() resumes with an HTTP Range request.
//
// Each chunk's size and sha256 are kept in its entry (`chunkSizes`, `chunkHashes`) and checked on
// every read: a chunk that the browser lost or damaged is downloaded again with a Range request
// for just its bytes, instead of failing every load. Writers of one entry hold a Web Lock named
// after it, so two tabs never interleave one file.

import { Sha256 } from './sha256.js';

const CHUNK_BYTES = 4 << 20; // bounded memory per download; also the size of most chunks (a download's last, and the last before a resume, are shorter)
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

  /**
   * Downloads `url` into the cache unless it is there -> { url, size, sha256, revision, commit }.
   * @param {string} url
   * @param {{ model?: string, revision?: string, signal?: AbortSignal, onProgress?: (loaded: number, total: number | null) => void }} [options]
   */
  ensure(url, options = {}) {
    const key = entryKey(url, options.revision);
    let pending = this.pending.get(key);
    if (!pending) {
      pending = this.#locked(key, () => this.#download(url, key, options)).finally(() => this.pending.delete(key));
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
  async storeDerived(url, options, chunks) {
    const key = entryKey(url, options.revision);
    return this.#locked(key, () => this.#storeDerived(url, key, options, chunks));
  }

  /**
   * Fails with a 'quota' CacheError when `bytes` more would not fit in the origin's storage (as far
   * as the browser's estimate tells), naming `what` and `detail` (what the figure counts).
   */
  async checkSpace(bytes, what, detail = '') {
    const available = await availableBytes();
    // 1% + 1 MiB for IndexedDB's own overhead.
    if (bytes * 1.01 + (1 << 20) > available) {
      throw new CacheError(
        'quota',
        `Not enough browser storage for ${what}: needs ${formatBytes(bytes)}${detail ? ` (${detail})` : ''}, ${formatBytes(available)} available`,
        { needed: bytes, available },
      );
    }
  }

  /**
   * What the server says about `url` without downloading it (a HEAD request):
   * { exists: false } on 404, else { exists: true, size } (size null when not announced).
   * Throws a 'network' CacheError when unreachable and an 'http' one for other statuses.
   */
  /** @param {string} url @param {{ model?: string, signal?: AbortSignal }} [options] */
  async probe(url, { model = '', signal } = {}) {
    const name = fileName(url, model);
    let response;
    try {
      response = await fetch(url, { method: 'HEAD', signal, cache: 'no-store' });
    } catch (err) {
      throw interrupted(url, name, signal, err);
    }
    if (response.status === 404) return { exists: false };
    if (!response.ok) throw new CacheError('http', `Could not look up ${name}: HTTP ${response.status}`, { url, status: response.status });
    return { exists: true, size: remoteInfo(response).size };
  }

  async #storeDerived(url, key, { model = '', revision = 'main' }, chunks) {
    await this.#delete([key]);
    let entry = { key, url, model, revision, size: null, sha256: null, commit: null, complete: false, bytesDone: 0, chunkCount: 0, chunkSizes: [], chunkHashes: [], created: Date.now(), derived: true };
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
    const key = entryKey(url, revision);
    await this.#locked(key, () => this.#delete([key]));
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

  /** @param {string} url @param {string} key @param {{ model?: string, revision?: string, signal?: AbortSignal, onProgress?: (loaded: number, total: number | null) => void }} options */
  async #download(url, key, { model = '', revision = 'main', signal, onProgress }) {
    const name = fileName(url, model);
    let entry = await this.#entry(key);
    if (entry?.complete) return summary(entry);
    // Resuming: the kept bytes must still be what arrived (and the hash must cover them too).
    let sha = new Sha256();
    if (entry && !(await this.#hashKept(entry, sha))) {
      await this.#delete([key]);
      entry = null;
    }

    let response = await fetchFrom(url, entry?.bytesDone ?? 0, name, signal);
    let remote = remoteInfo(response);
    if (entry && !(response.status === 206 && !remote.encoded && remote.size === entry.size && remote.sha256 === entry.sha256)) {
      // The server ignored the Range (200), could not satisfy it (416), sent it content-encoded
      // (a range of compressed bytes), or the file changed since the partial download: start over.
      await this.#delete([key]);
      entry = null;
      sha = new Sha256();
      if (response.status !== 200) {
        response.body?.cancel();
        response = await fetchFrom(url, 0, name, signal);
        remote = remoteInfo(response);
      }
    }
    // Until `complete`, size and sha256 are what the server announced (null when it did not).
    // `exactSize`: false when the size is only a Content-Length that may count encoded bytes.
    entry ??= {
      key, url, model, revision, size: remote.size, exactSize: remote.exactSize, sha256: remote.sha256, gitSha1: remote.gitSha1,
      commit: remote.commit, complete: false, bytesDone: 0, chunkCount: 0, chunkSizes: [], chunkHashes: [], created: Date.now(),
    };
    if (entry.size != null) {
      try {
        await this.checkSpace(entry.size - entry.bytesDone, name);
      } catch (err) {
        response.body?.cancel();
        throw Object.assign(err, { url });
      }
    }

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
        if (entry.size != null && entry.exactSize && entry.bytesDone + fill > entry.size) {
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
    const sizeWrong = entry.size != null && entry.exactSize && entry.bytesDone !== entry.size;
    if (sizeWrong || (entry.sha256 && got !== entry.sha256) || !(await this.#gitBlobMatches(entry))) {
      await this.#delete([key]);
      const expected = entry.sha256 ? `sha256 ${entry.sha256}` : entry.gitSha1 ? `git blob sha1 ${entry.gitSha1}` : 'sha256 (not announced)';
      throw new CacheError(
        'integrity',
        `${name} is corrupt: expected ${entry.exactSize ? entry.size : '?'} bytes with ${expected}, ` +
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
    const next = {
      ...entry, bytesDone: entry.bytesDone + data.length, chunkCount: entry.chunkCount + 1,
      chunkSizes: [...entry.chunkSizes, data.length], chunkHashes: [...entry.chunkHashes, await digestHex(data)],
    };
    await transaction(this.db, ['entries', 'chunks'], (tx) => {
      tx.objectStore('chunks').put(data, [entry.key, entry.chunkCount]);
      tx.objectStore('entries').put(next);
    });
    return next;
  }

  // One chunk per transaction: a long-lived transaction would block writers, and a consumer
  // uploading to the GPU between chunks would let it auto-commit anyway. Every chunk is checked
  // against its stored sha256; a missing or damaged one is downloaded again (#repair).
  async *#chunksOf(entry) {
    if (!entry.chunkHashes) entry = await this.#addChunkHashes(entry);
    let offset = 0;
    for (let i = 0; i < entry.chunkCount; i++) {
      let chunk = await this.#storedChunk(entry.key, i);
      if (!(await this.#chunkIntact(entry, i, chunk))) chunk = await this.#repair(entry, i, offset, chunk ? 'damaged' : 'missing');
      offset += entry.chunkSizes[i];
      yield chunk;
    }
  }

  #storedChunk(key, index) {
    return request(this.db.transaction('chunks').objectStore('chunks').get([key, index]));
  }

  async #chunkIntact(entry, index, chunk) {
    return chunk instanceof Uint8Array && chunk.length === entry.chunkSizes[index] && (await digestHex(chunk)) === entry.chunkHashes[index];
  }

  // A partial entry's kept chunks, fed to `sha` for the resumed download: false when one is
  // missing or damaged (or the entry predates chunk hashes), so the download starts over.
  async #hashKept(entry, sha) {
    if (!entry.chunkHashes) return false;
    for (let i = 0; i < entry.chunkCount; i++) {
      const chunk = await this.#storedChunk(entry.key, i);
      if (!(await this.#chunkIntact(entry, i, chunk))) return false;
      sha.update(chunk);
    }
    return true;
  }

  // Chunk `index` (at byte `offset`) again from the server, checked against its stored hash.
  // A file made here (a quantised copy) has no server: it is removed, and the next load makes
  // it anew. So is a file whose server now sends other bytes.
  async #repair(entry, index, offset, why) {
    const name = fileName(entry.url, entry.model);
    const size = entry.chunkSizes[index];
    const what = `chunk ${index + 1} of ${entry.chunkCount} of ${name} (bytes ${offset}-${offset + size - 1}) is ${why} in the browser cache`;
    // Called with the entry's lock held.
    const removed = async (reason) => {
      await this.#delete([entry.key]);
      return new CacheError('integrity', `${what}; ${reason}, so the file was removed from the cache: loading again downloads it anew`, { url: entry.url });
    };
    return this.#locked(entry.key, async () => {
      if (entry.derived) throw await removed('it is a quantised copy made in this browser');
      let response;
      try {
        response = await fetch(entry.url, { cache: 'no-store', headers: { Range: `bytes=${offset}-${offset + size - 1}` } });
      } catch (err) {
        throw new CacheError('network', `${what} and could not be downloaded again: ${err?.message ?? err}`, { url: entry.url });
      }
      const remote = remoteInfo(response);
      if (response.status !== 206 || remote.encoded) {
        response.body?.cancel();
        throw new CacheError('http', `${what} and the server did not send the byte range again (HTTP ${response.status})`, { url: entry.url, status: response.status });
      }
      const data = new Uint8Array(await response.arrayBuffer().catch((err) => {
        throw new CacheError('network', `${what} and downloading it again failed: ${err?.message ?? err}`, { url: entry.url });
      }));
      const changed = (remote.sha256 && entry.sha256 && remote.sha256 !== entry.sha256) || (remote.size != null && remote.size !== entry.size);
      if (changed || data.length !== size || (await digestHex(data)) !== entry.chunkHashes[index]) {
        throw await removed('the server now sends different bytes');
      }
      await transaction(this.db, ['chunks'], (tx) => tx.objectStore('chunks').put(data, [entry.key, index]));
      return data;
    });
  }

  // Entries stored before chunk hashes existed: hash every chunk once, check the whole file
  // against its sha256 and keep the chunk hashes; a damaged file is removed.
  async #addChunkHashes(entry) {
    return this.#locked(entry.key, async () => {
      const sha = new Sha256();
      const chunkSizes = [];
      const chunkHashes = [];
      for (let i = 0; i < entry.chunkCount; i++) {
        const chunk = await this.#storedChunk(entry.key, i);
        if (!(chunk instanceof Uint8Array)) break;
        sha.update(chunk);
        chunkSizes.push(chunk.length);
        chunkHashes.push(await digestHex(chunk));
      }
      const bytes = chunkSizes.reduce((a, b) => a + b, 0);
      if (chunkSizes.length !== entry.chunkCount || bytes !== entry.size || sha.hex() !== entry.sha256) {
        await this.#delete([entry.key]);
        throw new CacheError(
          'integrity',
          `${fileName(entry.url, entry.model)} is damaged in the browser cache (stored before chunk hashes, so it cannot be repaired); it was removed: loading again downloads it anew`,
          { url: entry.url },
        );
      }
      const upgraded = { ...entry, chunkSizes, chunkHashes };
      await transaction(this.db, ['entries'], (tx) => tx.objectStore('entries').put(upgraded));
      return upgraded;
    });
  }

  // Non-LFS files on the Hub carry the git blob sha1 as ETag instead of a sha256: check it
  // (small files only; LFS files carry a sha256).
  async #gitBlobMatches(entry) {
    if (!entry.gitSha1 || entry.sha256 || entry.bytesDone > CHUNK_BYTES || !crypto.subtle) return true;
    const content = entry.chunkCount ? await this.#storedChunk(entry.key, 0) : new Uint8Array(0);
    const header = new TextEncoder().encode(`blob ${entry.bytesDone}\0`);
    const blob = new Uint8Array(header.length + content.length);
    blob.set(header);
    blob.set(content, header.length);
    return hex(await crypto.subtle.digest('SHA-1', blob)) === entry.gitSha1;
  }

  // Web Locks (across tabs and workers of this origin) when the browser has them; this tab's
  // `pending` map already keeps its own callers apart.
  #locked(key, body) {
    return navigator.locks ? navigator.locks.request(`sdweb-cache ${this.db.name} ${key}`, body) : body();
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
// sha256 only when they are 64 hex digits; 40 hex digits are the Hub's git blob sha1 (small
// files). A content-encoded response (gzip/br from a CDN; fetch() decodes it) has a
// Content-Length of encoded bytes and an ETag of the encoded form, so neither says anything
// about the file; a cross-origin server may hide Content-Encoding, so a size from
// Content-Length alone is never exact (`exactSize`): the browser itself fails an identity
// body that ends early.
function remoteInfo(response) {
  const h = response.headers;
  const encoded = !['', 'identity'].includes((h.get('Content-Encoding') ?? '').trim().toLowerCase());
  const total = /\/(\d+)$/.exec(h.get('Content-Range') ?? '')?.[1];
  const exact = h.get('X-Linked-Size') ?? total;
  const length = response.status === 200 && !encoded ? h.get('Content-Length') : null;
  const size = exact ?? length;
  const tags = [h.get('X-Linked-Etag'), encoded ? null : h.get('ETag')]
    .map((tag) => tag?.replace(/^W\//, '').replaceAll('"', '').toLowerCase() ?? '');
  const sha256 = tags.find((tag) => /^[0-9a-f]{64}$/.test(tag)) ?? reprDigest(h);
  const gitSha1 = tags.find((tag) => /^[0-9a-f]{40}$/.test(tag)) ?? null;
  return { size: size == null ? null : Number(size), exactSize: exact != null, encoded, sha256, gitSha1, commit: h.get('X-Repo-Commit') };
}

// RFC 9530 `Repr-Digest: sha-256=:BASE64:` (of the decoded representation), or null.
function reprDigest(headers) {
  const b64 = /(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):/.exec(headers.get('Repr-Digest') ?? '')?.[1];
  if (!b64) return null;
  try {
    return hex(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  } catch {
    return null;
  }
}

const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');

// sha256 of one chunk: the browser's native digest where it has one (secure contexts), else ours.
async function digestHex(data) {
  return globalThis.crypto?.subtle ? hex(await crypto.subtle.digest('SHA-256', data)) : new Sha256().update(data).hex();
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

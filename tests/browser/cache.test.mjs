// www/cache.js and www/sha256.js in headless Chromium against tools/server.mjs with fault injection.
// Run: cd tests/browser && npm ci && node --test cache.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../tools/server.mjs';

const MiB = 1 << 20;
const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/sd1_tiny');
const CHUNK = 4 * MiB; // cache.js CHUNK_BYTES

// Deterministic pseudo-random bytes (xorshift32), different per seed.
function bytes(size, seed) {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

const dir = mkdtempSync(path.join(tmpdir(), 'sdweb-cache-test-'));
const files = {
  'blank.html': Buffer.from('<!doctype html><title>cache test</title>'),
  'good/unet/weights.safetensors': bytes(2 * CHUNK + 12345, 1), // three chunks, the last one short
  'good/model_index.json': Buffer.from(JSON.stringify({ _class_name: 'StableDiffusionPipeline', note: 'héllo' })),
  'resume/weights.safetensors': bytes(CHUNK + 3 * MiB, 2),
  'corrupt/weights.safetensors': bytes(3 * MiB, 3),
  'truncate/weights.safetensors': bytes(3 * MiB, 4),
  'abort/weights.safetensors': bytes(CHUNK + MiB, 5),
  'quota/unet/weights.safetensors': bytes(6 * MiB, 6),
  'partial/weights.safetensors': bytes(CHUNK + 2 * MiB, 7),
  'repair/weights.safetensors': bytes(2 * CHUNK + 777, 8),
  'repair-fail/weights.safetensors': bytes(CHUNK + 999, 9),
  'legacy/weights.safetensors': bytes(CHUNK + 5, 10),
  'gzip/model_index.json': Buffer.from(JSON.stringify({ _class_name: 'StableDiffusionPipeline', padding: 'x'.repeat(100000) })),
  'br/weights.safetensors': bytes(MiB + 3, 11), // random: its brotli form is larger than it
  'git/config.json': Buffer.from('{"in_channels": 4}\n'),
  'digest/weights.safetensors': bytes(MiB, 12),
  'tabs/weights.safetensors': bytes(2 * CHUNK + 1, 13),
};
for (const [name, data] of Object.entries(files)) {
  mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
  writeFileSync(path.join(dir, name), data);
}

let server, browser, page, base;

before(async () => {
  server = await startServer({ port: 0, testHooks: true, mounts: { '/files': dir, '/demo': FIXTURE } });
  base = `${server.url}files/`;
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
      '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-unsafe-swiftshader',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
      // Chromium reports usage + 10 GiB from navigator.storage.estimate() under this feature, whatever
      // the real (or overridden) quota; the quota test needs the overridden figure.
      '--disable-features=StaticStorageQuota',
    ],
  });
  page = await openPage(await browser.newContext());
});

// A page on the test server with cache.js loaded and a few helpers as globals.
async function openPage(context) {
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
  await page.goto(`${base}blank.html`);
  await page.evaluate(async () => {
    const m = await import('/cache.js');
    globalThis.m = m;
    globalThis.cache = await m.ModelCache.open('sdweb-cache-test');
    // Run fn and hand back either its value or the CacheError's fields.
    globalThis.attempt = async (fn) => {
      try {
        return { ok: await fn() };
      } catch (e) {
        return { error: { name: e.name, code: e.code, message: e.message, status: e.status, needed: e.needed, available: e.available } };
      }
    };
    // Straight from IndexedDB: every entry (partial ones included), and the entry keys of all chunks.
    const getAll = (store, method) => new Promise((resolve, reject) => {
      const req = cache.db.transaction(store).objectStore(store)[method]();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    globalThis.allEntries = () => getAll('entries', 'getAll');
    // Damage the store as a browser (or a crash) might: rewrite or drop one chunk, edit an entry.
    const write = (store, fn) => new Promise((resolve, reject) => {
      const tx = cache.db.transaction(store, 'readwrite');
      fn(tx.objectStore(store));
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    globalThis.flipChunkByte = async (url, index, at) => {
      const key = ['main@' + url, index];
      const chunk = await new Promise((resolve) => { cache.db.transaction('chunks').objectStore('chunks').get(key).onsuccess = (e) => resolve(e.target.result); });
      chunk[at] ^= 0xff;
      await write('chunks', (s) => s.put(chunk, key));
    };
    globalThis.dropChunk = (url, index) => write('chunks', (s) => s.delete(['main@' + url, index]));
    globalThis.editEntry = async (url, edit) => {
      const entry = (await allEntries()).find((e) => e.key === 'main@' + url);
      await write('entries', (s) => s.put(edit(entry)));
    };
    globalThis.chunkOwners = async () => (await getAll('chunks', 'getAllKeys')).map(([entryKey]) => entryKey);
    // sha256 and length of a cached file, read back chunk by chunk.
    globalThis.readBack = async (url) => {
      const parts = [];
      for await (const c of cache.chunks(url)) parts.push(c);
      const all = new Uint8Array(parts.reduce((n, c) => n + c.length, 0));
      let offset = 0;
      for (const c of parts) {
        all.set(c, offset);
        offset += c.length;
      }
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
      return { sizes: parts.map((c) => c.length), length: all.length, sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join('') };
    };
  });
  return page;
}

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const fault = (file, mode, bytes) =>
  fetch(`${server.url}__fault?path=/files/${file}&mode=${mode}${bytes == null ? '' : `&bytes=${bytes}`}`, { method: 'POST' }).then((r) => {
    assert.equal(r.status, 200);
  });
const clearLog = () => fetch(`${server.url}__requests/clear`, { method: 'POST' });
const requestsFor = async (file) =>
  (await (await fetch(`${server.url}__requests`)).json()).filter((r) => r.path === `/files/${file}`);

test('Sha256 matches crypto.subtle', async () => {
  const results = await page.evaluate(async () => {
    const { Sha256 } = await import('/sha256.js');
    const out = [];
    for (const size of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, (1 << 20) + 3]) {
      const data = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
      const want = [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
      const whole = new Sha256().update(data).hex();
      const pieces = new Sha256(); // odd split points exercise the partial-block buffer
      for (let i = 0, step = 1; i < size; i += step, step = (step * 7 + 3) % 5003) pieces.update(data.subarray(i, i + step));
      out.push({ size, want, whole, pieces: pieces.hex() });
    }
    return out;
  });
  assert.equal(results.length, 11);
  for (const r of results) {
    assert.equal(r.whole, r.want, `size ${r.size}`);
    assert.equal(r.pieces, r.want, `size ${r.size}, split`);
  }
  assert.equal(results[0].want, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('download, then chunks / bytes / text round trip', async () => {
  await clearLog();
  const file = files['good/unet/weights.safetensors'];
  const r = await page.evaluate(async (base) => {
    const url = `${base}good/unet/weights.safetensors`;
    const progress = [];
    const info = await cache.ensure(url, { model: `${base}good/`, onProgress: (loaded, total) => progress.push([loaded, total]) });
    const config = await cache.ensure(`${base}good/model_index.json`, { model: `${base}good/` });
    return {
      info, config, progress, has: await cache.has(url), back: await readBack(url),
      text: await cache.text(`${base}good/model_index.json`),
      bytesLen: (await cache.bytes(url)).length,
    };
  }, base);
  assert.deepEqual(r.info, { url: `${base}good/unet/weights.safetensors`, size: file.length, sha256: sha256(file), revision: 'main', commit: null });
  assert.equal(r.has, true);
  assert.deepEqual(r.back, { sizes: [CHUNK, CHUNK, 12345], length: file.length, sha256: sha256(file) });
  assert.equal(r.bytesLen, file.length);
  assert.equal(r.text, files['good/model_index.json'].toString());
  assert.equal(r.config.sha256, sha256(files['good/model_index.json']));
  assert.deepEqual(r.progress.at(-1), [file.length, file.length]);
  assert.deepEqual(r.progress[0], [0, file.length]);
  const log = await requestsFor('good/unet/weights.safetensors');
  assert.deepEqual(log, [{ method: 'GET', path: '/files/good/unet/weights.safetensors', range: null }]);
});

test('a cached file is not requested again', async () => {
  await clearLog();
  const info = await page.evaluate((base) => cache.ensure(`${base}good/unet/weights.safetensors`, { model: `${base}good/` }), base);
  assert.equal(info.sha256, sha256(files['good/unet/weights.safetensors']));
  assert.deepEqual(server.requests, []);
});

test('an interrupted download resumes with a Range request', async () => {
  const name = 'resume/weights.safetensors';
  const dropAt = CHUNK + 2 * MiB + 7;
  // Chromium errors the body stream as soon as the socket dies, dropping data it had buffered but
  // not yet handed to the reader, so the resume point is anywhere in (0, dropAt].
  await clearLog();
  await fault(name, 'drop-after', dropAt);
  const r = await page.evaluate(async ({ base, name }) => {
    const url = base + name;
    const first = await attempt(() => cache.ensure(url, { model: `${base}resume/` }));
    const hasAfterFailure = await cache.has(url);
    const second = await attempt(() => cache.ensure(url, { model: `${base}resume/` }));
    return { first, hasAfterFailure, second, back: await readBack(url) };
  }, { base, name });
  assert.equal(r.first.error?.code, 'network', JSON.stringify(r.first));
  assert.match(r.first.error.message, /^Download of weights\.safetensors failed: /);
  assert.equal(r.hasAfterFailure, false);
  assert.equal(r.second.ok?.sha256, sha256(files[name]), JSON.stringify(r.second));
  assert.equal(r.back.sha256, sha256(files[name]));

  const log = await requestsFor(name);
  assert.equal(log.length, 2, JSON.stringify(log));
  assert.equal(log[0].range, null);
  const resumedFrom = Number(/^bytes=(\d+)-$/.exec(log[1].range)?.[1]);
  assert.ok(resumedFrom > 0 && resumedFrom <= dropAt, `resumed from ${log[1].range}`);
  assert.equal(r.back.sizes.reduce((a, b) => a + b), files[name].length);
});

test('a corrupted download fails integrity and leaves nothing', async () => {
  const name = 'corrupt/weights.safetensors';
  await fault(name, 'corrupt');
  const r = await page.evaluate(async ({ base, name }) => ({
    result: await attempt(() => cache.ensure(base + name, { model: `${base}corrupt/` })),
    has: await cache.has(base + name),
    models: await cache.listModels(),
    chunks: (await chunkOwners()).filter((k) => k.includes('/files/corrupt/')),
  }), { base, name });
  assert.equal(r.result.error?.code, 'integrity', JSON.stringify(r.result));
  assert.ok(r.result.error.message.includes('weights.safetensors'), r.result.error.message);
  assert.ok(r.result.error.message.includes(sha256(files[name])), 'message names the expected sha256');
  assert.equal(r.has, false);
  assert.equal(r.models.find((m) => m.model === `${base}corrupt/`), undefined);
  assert.deepEqual(r.chunks, []);
});

test('a truncated download fails integrity', async () => {
  const name = 'truncate/weights.safetensors';
  await fault(name, 'truncate', MiB);
  const r = await page.evaluate(async ({ base, name }) => ({
    result: await attempt(() => cache.ensure(base + name, { model: `${base}truncate/` })),
    has: await cache.has(base + name),
  }), { base, name });
  assert.equal(r.result.error?.code, 'integrity', JSON.stringify(r.result));
  assert.match(r.result.error.message, new RegExp(`expected ${files[name].length} bytes.*got ${MiB} bytes`));
  assert.equal(r.has, false);
});

test('HTTP errors carry the status', async () => {
  const r = await page.evaluate((base) => attempt(() => cache.ensure(`${base}good/missing.json`)), base);
  assert.equal(r.error?.code, 'http');
  assert.equal(r.error.status, 404);
  assert.equal(r.error.message, 'Could not download missing.json: HTTP 404');

  await fault('good/model_index.json', 'status', 503);
  const again = await page.evaluate((base) => attempt(() => cache.ensure(`${base}good/model_index.json`, { revision: 'other' })), base);
  assert.equal(again.error?.status, 503);
});

test('aborting keeps a resumable partial entry', async () => {
  const name = 'abort/weights.safetensors';
  await clearLog();
  const r = await page.evaluate(async ({ base, name }) => {
    const ctl = new AbortController();
    const onProgress = (loaded) => loaded >= 4 << 20 && ctl.abort();
    const first = await attempt(() => cache.ensure(base + name, { signal: ctl.signal, onProgress }));
    const second = await attempt(() => cache.ensure(base + name));
    return { first, second };
  }, { base, name });
  assert.equal(r.first.error?.code, 'aborted', JSON.stringify(r.first));
  assert.equal(r.second.ok?.sha256, sha256(files[name]));
  const log = await requestsFor(name);
  assert.equal(log.length, 2);
  assert.match(log[1].range, /^bytes=\d+-$/);
});

test('too little storage: quota errors, nothing stored', async () => {
  const name = 'quota/unet/weights.safetensors';
  // A fresh context: usage near zero, not blurred by the space other tests freed.
  const context = await browser.newContext();
  const page = await openPage(context);
  const cdp = await context.newCDPSession(page);
  const origin = new URL(server.url).origin;
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 2 * MiB });
  try {
    const r = await page.evaluate(async ({ base, name }) => {
      const { quota, usage } = await navigator.storage.estimate();
      const result = await attempt(() => cache.ensure(base + name, { model: `${base}quota/` }));
      return {
        available: quota - usage,
        result,
        has: await cache.has(base + name),
        models: await cache.listModels(),
        needed: m.formatBytes(6 << 20),
        availableText: m.formatBytes(quota - usage),
      };
    }, { base, name });
    assert.ok(r.available < 3 * MiB, `override applied (available ${r.available})`);
    assert.equal(r.result.error?.code, 'quota', JSON.stringify(r.result));
    assert.equal(r.result.error.needed, files[name].length);
    assert.equal(r.result.error.available, r.available);
    assert.equal(r.needed, '6.3 MB');
    assert.equal(r.result.error.message, `Not enough browser storage for unet/weights.safetensors: needs 6.3 MB, ${r.availableText} available`);
    assert.equal(r.has, false);
    assert.equal(r.models.find((m) => m.model === `${base}quota/`), undefined);

    // The estimate can be stale or wrong: a QuotaExceededError from the writes themselves must
    // also end as a 'quota' error with nothing left behind.
    const w = await page.evaluate(async ({ base, name }) => {
      const real = navigator.storage.estimate;
      navigator.storage.estimate = async () => ({ quota: 1e12, usage: 0 });
      try {
        const result = await attempt(() => cache.ensure(base + name, { model: `${base}quota/` }));
        return { result, has: await cache.has(base + name) };
      } finally {
        navigator.storage.estimate = real;
      }
    }, { base, name });
    assert.equal(w.result.error?.code, 'quota', JSON.stringify(w.result));
    assert.match(w.result.error.message, /^Not enough browser storage for unet\/weights\.safetensors: needs 6\.3 MB/);
    assert.equal(w.has, false);
    assert.deepEqual(await page.evaluate(() => chunkOwners()), []);
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    await context.close();
  }
});

test('listModels and deleteModel (complete and partial entries)', async () => {
  const good = files['good/unet/weights.safetensors'].length + files['good/model_index.json'].length;
  const partial = 'partial/weights.safetensors';
  const r = await page.evaluate(async ({ base, partial }) => {
    const before = await cache.listModels();
    // Abort after the first chunk is stored, leaving a partial entry of the `partial/` model.
    const ctl = new AbortController();
    const onProgress = (loaded) => loaded >= 4 << 20 && ctl.abort();
    const aborted = await attempt(() => cache.ensure(base + partial, { model: `${base}partial/`, signal: ctl.signal, onProgress }));
    const partialEntries = (await allEntries()).filter((e) => e.model === `${base}partial/`);
    await cache.deleteModel(`${base}good/`);
    await cache.deleteModel(`${base}partial/`);
    return {
      before, aborted, partialEntries, after: await cache.listModels(),
      left: (await allEntries()).filter((e) => e.model === `${base}good/` || e.model === `${base}partial/`).length,
      leftChunks: (await chunkOwners()).filter((k) => k.includes('/files/good/') || k.includes('/files/partial/')).length,
      has: await cache.has(`${base}good/unet/weights.safetensors`),
      read: await attempt(() => cache.bytes(`${base}good/model_index.json`)),
    };
  }, { base, partial });
  assert.deepEqual(r.before.find((m) => m.model === `${base}good/`), { model: `${base}good/`, revision: 'main', files: 2, bytes: good });
  assert.ok(!r.before.some((m) => m.model === `${base}partial/`));
  assert.equal(r.aborted.error?.code, 'aborted');
  assert.equal(r.partialEntries.length, 1);
  assert.equal(r.partialEntries[0].complete, false);
  assert.ok(r.partialEntries[0].bytesDone >= CHUNK);
  assert.equal(r.after.find((m) => m.model === `${base}good/`), undefined);
  assert.equal(r.left, 0);
  assert.equal(r.leftChunks, 0);
  assert.equal(r.has, false);
  assert.match(r.read.error?.message ?? '', /is not in the cache/);

  // The partial entry's chunks went too: the next download starts from byte 0.
  await clearLog();
  const info = await page.evaluate(({ base, partial }) => cache.ensure(base + partial, { model: `${base}partial/` }), { base, partial });
  assert.equal(info.sha256, sha256(files[partial]));
  assert.deepEqual((await requestsFor(partial)).map((x) => x.range), [null]);
});

test('a damaged or missing cached chunk is downloaded again with a Range request for its bytes', async () => {
  const name = 'repair/weights.safetensors';
  const url = base + name;
  await page.evaluate((url) => cache.ensure(url), url);
  await page.evaluate(async (url) => {
    await flipChunkByte(url, 1, 12345);
    await dropChunk(url, 2);
  }, url);
  await clearLog();
  const r = await page.evaluate(async (url) => {
    const t0 = performance.now();
    const first = await readBack(url);
    const repairedMs = performance.now() - t0;
    const t1 = performance.now();
    const second = await readBack(url);
    return { first, second, repairedMs, verifiedMs: performance.now() - t1 };
  }, url);
  const file = files[name];
  console.log(`verified read of ${(file.length / MiB).toFixed(1)} MiB: ${r.verifiedMs.toFixed(0)} ms (${(file.length / MiB / (r.verifiedMs / 1000)).toFixed(0)} MiB/s, reads + sha256 per chunk); with two chunks repaired: ${r.repairedMs.toFixed(0)} ms`);
  assert.equal(r.first.sha256, sha256(file));
  assert.deepEqual(r.first.sizes, [CHUNK, CHUNK, 777]);
  assert.equal(r.second.sha256, sha256(file));
  // Exactly the two bad chunks, once each: the repaired ones were stored back.
  assert.deepEqual((await requestsFor(name)).map((x) => x.range), [`bytes=${CHUNK}-${2 * CHUNK - 1}`, `bytes=${2 * CHUNK}-${2 * CHUNK + 776}`]);
});

test('a chunk that cannot be fetched again keeps the entry; one the server now sends differently removes it', async () => {
  const name = 'repair-fail/weights.safetensors';
  const url = base + name;
  await page.evaluate((url) => cache.ensure(url), url);
  await page.evaluate((url) => flipChunkByte(url, 0, 5), url);
  await fault(name, 'status', 503);
  const offline = await page.evaluate((url) => attempt(() => readBack(url)), url);
  assert.equal(offline.error?.code, 'http', JSON.stringify(offline));
  assert.equal(offline.error.message, `chunk 1 of 2 of weights.safetensors (bytes 0-${CHUNK - 1}) is damaged in the browser cache and the server did not send the byte range again (HTTP 503)`);
  assert.equal(await page.evaluate((url) => cache.has(url), url), true, 'a transient failure must not drop the file');
  assert.equal((await page.evaluate((url) => readBack(url), url)).sha256, sha256(files[name]), 'repaired on the next read');

  await page.evaluate((url) => flipChunkByte(url, 1, 5), url);
  await fault(name, 'corrupt');
  const changed = await page.evaluate((url) => attempt(() => readBack(url)), url);
  assert.equal(changed.error?.code, 'integrity', JSON.stringify(changed));
  assert.match(changed.error.message, /^chunk 2 of 2 of weights\.safetensors \(bytes 4194304-4195302\) is damaged in the browser cache; the server now sends different bytes, so the file was removed from the cache: loading again downloads it anew$/);
  assert.equal(await page.evaluate((url) => cache.has(url), url), false);
  assert.equal((await page.evaluate((url) => cache.ensure(url), url)).sha256, sha256(files[name]), 'the next ensure() downloads it anew');
});

test('entries cached before chunk hashes are checked whole once and upgraded; a damaged one is removed', async () => {
  const name = 'legacy/weights.safetensors';
  const url = base + name;
  await page.evaluate((url) => cache.ensure(url), url);
  const makeLegacy = (url) => editEntry(url, ({ chunkSizes, chunkHashes, ...old }) => old);
  await page.evaluate(makeLegacy, url);
  const r = await page.evaluate(async (url) => ({ back: await readBack(url), entry: (await allEntries()).find((e) => e.url === url) }), url);
  assert.equal(r.back.sha256, sha256(files[name]));
  assert.deepEqual(r.entry.chunkSizes, [CHUNK, 5]);
  assert.equal(r.entry.chunkHashes[1], sha256(files[name].subarray(CHUNK)));

  await page.evaluate(makeLegacy, url);
  await page.evaluate((url) => flipChunkByte(url, 0, 1), url);
  const damaged = await page.evaluate((url) => attempt(() => readBack(url)), url);
  assert.equal(damaged.error?.code, 'integrity');
  assert.match(damaged.error.message, /^weights\.safetensors is damaged in the browser cache \(stored before chunk hashes/);
  assert.equal(await page.evaluate((url) => cache.has(url), url), false);
});

test('a damaged quantised copy (made here, no server) is removed with a clear error', async () => {
  const url = `${base}derived/unet/weights.sdweb-q8_0.safetensors`;
  const r = await page.evaluate(async (url) => {
    async function* parts() { yield new Uint8Array(5 << 20).fill(7); }
    await cache.storeDerived(url, { model: url.replace(/unet\/.*/, '') }, parts());
    await flipChunkByte(url, 1, 0);
    return { read: await attempt(() => readBack(url)), has: await cache.has(url) };
  }, url);
  assert.equal(r.read.error?.code, 'integrity');
  assert.match(r.read.error.message, /^chunk 2 of 2 of unet\/weights\.sdweb-q8_0\.safetensors .* it is a quantised copy made in this browser, so the file was removed/);
  assert.equal(r.has, false);
  assert.deepEqual(await requestsFor('derived/unet/weights.sdweb-q8_0.safetensors'), []);
});

test('gzip and br responses from a compressing CDN download intact (their Content-Length counts encoded bytes)', async () => {
  for (const [name, mode] of [['gzip/model_index.json', 'gzip'], ['br/weights.safetensors', 'br']]) {
    await fault(name, mode);
    const r = await page.evaluate((url) => attempt(async () => ({ info: await cache.ensure(url), back: await readBack(url) })), base + name);
    assert.ok(r.ok, `${mode}: ${JSON.stringify(r.error)}`);
    assert.equal(r.ok.info.size, files[name].length, mode);
    assert.equal(r.ok.back.sha256, sha256(files[name]), mode);
  }
});

test('off the Hub: a git blob sha1 ETag and an RFC 9530 Repr-Digest are checked', async () => {
  for (const [name, mode, expected] of [['git/config.json', 'git-etag', /with git blob sha1 [0-9a-f]{40}, got/], ['digest/weights.safetensors', 'repr-digest', new RegExp(`with sha256 ${sha256(files['digest/weights.safetensors'])}, got`)]]) {
    await fault(name, `${mode},corrupt`);
    const bad = await page.evaluate((url) => attempt(() => cache.ensure(url)), base + name);
    assert.equal(bad.error?.code, 'integrity', `${mode}: ${JSON.stringify(bad)}`);
    assert.match(bad.error.message, expected);
    await fault(name, mode);
    const good = await page.evaluate((url) => attempt(() => cache.ensure(url)), base + name);
    assert.equal(good.ok?.sha256, sha256(files[name]), `${mode}: ${JSON.stringify(good)}`);
  }
});

test('two tabs loading one file at once: one download (Web Locks), both get it', async () => {
  const name = 'tabs/weights.safetensors';
  const second = await openPage(page.context());
  try {
    await clearLog();
    const results = await Promise.all([page, second].map((p) => p.evaluate((url) => cache.ensure(url).then((i) => i.sha256), base + name)));
    assert.deepEqual(results, [sha256(files[name]), sha256(files[name])]);
    assert.deepEqual((await requestsFor(name)).map((r) => `${r.method} ${r.range}`), ['GET null']);
  } finally {
    await second.close();
  }
});

test('a whole model that cannot fit (quantise-on-load included) is refused before its first byte', { skip: !existsSync(path.resolve(FIXTURE, '../../../www/pkg/sdweb_bg.wasm')) && 'needs www/pkg (www/build-wasm.sh dev)' }, async () => {
  const context = await browser.newContext();
  const fresh = await openPage(context);
  const cdp = await context.newCDPSession(fresh);
  const origin = new URL(server.url).origin;
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 20 * MiB });
  try {
    await clearLog();
    const r = await fresh.evaluate(async (model) => {
      const { createGenerator } = await import('/sdweb.js');
      const { quota, usage } = await navigator.storage.estimate();
      let error = null;
      try {
        (await createGenerator({ model, quantize: 'q8_0' })).dispose();
      } catch (e) {
        error = { code: e.code, message: e.message };
      }
      return { error, available: quota - usage, models: await (await import('/sdweb.js')).listCachedModels() };
    }, `${server.url}demo`);
    console.log(`whole-model quota: ${r.error?.message}`);
    assert.equal(r.error?.code, 'quota', JSON.stringify(r));
    // At the peak everything but the VAE and the scheduler config is stored, and the UNet's
    // q8_0 copy is being written next to its original.
    const size = (p) => statSync(path.join(FIXTURE, p)).size;
    const all = readdirSync(FIXTURE, { recursive: true }).filter((p) => statSync(path.join(FIXTURE, p)).isFile()).reduce((n, p) => n + size(p), 0);
    const peak = all - size('vae/diffusion_pytorch_model.safetensors') - size('vae/config.json') - size('scheduler/scheduler_config.json') + size('unet/diffusion_pytorch_model.safetensors');
    const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
    // (The worker's estimate comes after its own database opened: a few kB less available.)
    assert.match(r.error.message, /, \d+\.\d MB available$/);
    assert.equal(r.error.message.replace(/, [^,]* available$/, ''), `Not enough browser storage for demo: needs ${mb(peak)} (12 files to download, ${mb(all)}, and room for each q8_0 copy while it is made next to its original)`);
    assert.deepEqual(r.models, []);
    const gets = (await (await fetch(`${server.url}__requests`)).json()).filter((x) => x.path.startsWith('/demo/') && x.method === 'GET');
    assert.deepEqual(gets, [], 'nothing may be downloaded');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    await context.close();
  }
});

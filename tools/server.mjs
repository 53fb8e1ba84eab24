// Static server for the sdweb app and its browser tests. Node 20, no dependencies.
//
//   node tools/server.mjs [--port N] [--host H] [--root DIR] [--mount /prefix=DIR ...] [--test-hooks]
//
// Every file is served with the headers the Hugging Face Hub puts on model files (ETag and
// X-Linked-Etag = sha256, X-Linked-Size, byte ranges, CORS), so the weights cache can be tested
// against this server exactly as it runs against the Hub. --test-hooks adds a request log and
// fault injection (interrupted, corrupted, truncated downloads; error statuses).

import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { createReadStream, realpathSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

// The app it serves by default: www/ next to this folder.
const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../www');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.safetensors': 'application/octet-stream',
};

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers':
    'ETag, X-Linked-Etag, X-Linked-Size, Content-Range, Content-Length, Content-Encoding, Accept-Ranges, X-Repo-Commit, Repr-Digest',
};

// Faults: drop-after, corrupt, truncate, status (bytes = the HTTP status). Header modes, which
// combine with those (mode=a,b): plain-cdn (no Hub headers, a weak ETag), git-etag (the Hub's
// small-file headers: ETag = git blob sha1, no X-Linked-*), repr-digest (plain CDN plus an RFC
// 9530 Repr-Digest), gzip / br (content-encoded whole file, as a compressing CDN sends it;
// Range ignored).
const FAULT_MODES = new Set(['drop-after', 'corrupt', 'truncate', 'status', 'plain-cdn', 'git-etag', 'repr-digest', 'gzip', 'br']);

/**
 * options: { port = 8080 (0 = any free port), host = '127.0.0.1', root = www/,
 *            mounts = { '/prefix': dir }, testHooks = false }
 * Resolves to { url, port, close(), requests } once listening.
 */
export async function startServer({ port = 8080, host = '127.0.0.1', root = WWW, mounts = {}, testHooks = false } = {}) {
  // Longest prefix first so /models/demo/x wins over /models/x.
  const bases = Object.entries(mounts)
    .map(([prefix, dir]) => [prefix.replace(/\/+$/, ''), path.resolve(dir)])
    .sort((a, b) => b[0].length - a[0].length);
  bases.push(['', path.resolve(root)]);

  const requests = [];
  const faults = new Map(); // exact URL path -> { mode, bytes, times }
  const hashes = new Map(); // file path -> { mtimeMs, size, sha: Promise<string> }

  function sha256Of(file, st) {
    const hit = hashes.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.sha;
    const sha = new Promise((resolve, reject) => {
      const h = createHash('sha256');
      createReadStream(file).on('data', (d) => h.update(d)).on('error', reject).on('end', () => resolve(h.digest('hex')));
    });
    hashes.set(file, { mtimeMs: st.mtimeMs, size: st.size, sha });
    sha.catch(() => hashes.delete(file));
    return sha;
  }

  // URL path -> file system path, or null when it would escape its base. Symlinks inside a base
  // are followed wherever they point (www/models/demo links into tests/fixtures).
  function resolveFile(urlPath) {
    for (const [prefix, dir] of bases) {
      if (prefix && urlPath !== prefix && !urlPath.startsWith(prefix + '/')) continue;
      const file = path.resolve(dir, '.' + urlPath.slice(prefix.length));
      return file === dir || file.startsWith(dir + path.sep) ? file : null;
    }
    return null;
  }

  function hooks(req, res, url) {
    const reply = (status, body) => {
      res.writeHead(status, { ...CORS, 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && url.pathname === '/__requests') return reply(200, requests);
    if (req.method !== 'POST') return reply(405, { error: `${req.method} not allowed on ${url.pathname}` });
    if (url.pathname === '/__requests/clear') {
      requests.length = 0; // in place: startServer() callers hold this array
      return reply(200, { ok: true });
    }
    if (url.pathname === '/__faults/clear') {
      faults.clear();
      return reply(200, { ok: true });
    }
    if (url.pathname === '/__fault') {
      const q = url.searchParams;
      const modes = (q.get('mode') ?? '').split(',');
      const fault = { modes: new Set(modes), bytes: q.has('bytes') ? Number(q.get('bytes')) : null, times: Number(q.get('times') ?? 1) };
      if (!q.get('path') || !modes.every((m) => FAULT_MODES.has(m)) || (fault.modes.has('status') && !(fault.bytes >= 100))) {
        return reply(400, { error: `need path=/x and mode=${[...FAULT_MODES].join('|')} (comma-separated)[&bytes=N][&times=K]; status needs bytes=<HTTP status>` });
      }
      faults.set(q.get('path'), fault);
      return reply(200, { ok: true, fault: { ...fault, modes: [...fault.modes] } });
    }
    return reply(404, { error: `no test hook ${url.pathname}` });
  }

  // The fault installed for this path, if any, counting this request against its `times`.
  function takeFault(urlPath) {
    const fault = faults.get(urlPath);
    if (!fault) return null;
    if (--fault.times <= 0) faults.delete(urlPath);
    return fault;
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://localhost');
    let urlPath;
    try {
      urlPath = decodeURIComponent(url.pathname);
    } catch {
      return plain(res, 400, 'bad URL encoding');
    }
    if (testHooks && urlPath.startsWith('/__')) return hooks(req, res, url);
    if (testHooks) requests.push({ method: req.method, path: urlPath, range: req.headers.range ?? null });

    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...CORS,
        'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
        'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] || 'Range',
        'Access-Control-Max-Age': '86400',
      });
      return res.end();
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, `${req.method} not allowed`);

    let file = urlPath.includes('\0') ? null : resolveFile(urlPath);
    if (!file) return plain(res, 404, `not found: ${urlPath}`);
    let st = await stat(file).catch(() => null);
    if (st?.isDirectory()) {
      // Relative links in index.html need the trailing slash.
      if (!urlPath.endsWith('/')) {
        res.writeHead(301, { ...CORS, Location: url.pathname + '/' + url.search });
        return res.end();
      }
      file = path.join(file, 'index.html');
      st = await stat(file).catch(() => null);
    }
    if (!st?.isFile()) return plain(res, 404, `not found: ${urlPath}`);

    const fault = req.method === 'GET' ? takeFault(urlPath) : null;
    const modes = fault?.modes ?? new Set();
    if (modes.has('status')) return plain(res, fault.bytes, `injected status ${fault.bytes} for ${urlPath}`);

    const sha = await sha256Of(file, st);
    const ext = path.extname(file).toLowerCase();
    const headers = {
      ...CORS,
      'Content-Type': TYPES[ext] ?? 'application/octet-stream',
      // Revalidate (cheap: ETag -> 304) on every load, so a rebuilt wasm/js is never mixed with a stale one.
      'Cache-Control': 'no-cache',
      'Accept-Ranges': 'bytes',
      ETag: `"${sha}"`,
      'X-Linked-Etag': `"${sha}"`,
      'X-Linked-Size': String(st.size),
    };
    if (modes.has('plain-cdn') || modes.has('git-etag') || modes.has('repr-digest')) {
      delete headers['X-Linked-Etag'];
      delete headers['X-Linked-Size'];
      headers.ETag = `W/"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    }
    if (modes.has('git-etag')) {
      const content = await readFile(file);
      headers.ETag = `"${createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex')}"`;
    }
    if (modes.has('repr-digest')) headers['Repr-Digest'] = `sha-256=:${Buffer.from(sha, 'hex').toString('base64')}:`;
    if (modes.has('gzip') || modes.has('br')) {
      const content = await readFile(file);
      const body = modes.has('gzip') ? gzipSync(content) : brotliCompressSync(content);
      // As a compressing proxy does: the ETag names the encoded form, Content-Length counts it.
      headers.ETag = `W/"${modes.has('gzip') ? 'gz' : 'br'}-${sha.slice(0, 16)}"`;
      res.writeHead(200, { ...headers, 'Content-Encoding': modes.has('gzip') ? 'gzip' : 'br', 'Content-Length': String(body.length) });
      return res.end(req.method === 'HEAD' ? undefined : body);
    }
    if (!fault && req.headers['if-none-match'] === headers.ETag) {
      res.writeHead(304, headers);
      return res.end();
    }

    const range = parseRange(req.headers.range, st.size);
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${st.size}`, 'Content-Length': '0' });
      return res.end();
    }
    let [start, end] = range ?? [0, st.size - 1]; // inclusive; end = -1 for an empty file
    if (modes.has('truncate')) end = Math.min(end, start + (fault.bytes ?? Math.floor((end - start + 1) / 2)) - 1);
    headers['Content-Length'] = String(end - start + 1);
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD' || end < start) return res.end();
    await sendBody(res, file, start, end, fault);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      console.error(`sdweb: ${req.method} ${req.url}:`, err);
      if (!res.headersSent) plain(res, 500, String(err));
      else res.destroy();
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actualPort = server.address().port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actualPort}/`,
    port: actualPort,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function plain(res, status, text) {
  res.writeHead(status, { ...CORS, 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(text + '\n');
}

// `bytes=N-`, `bytes=N-M` or `bytes=-SUFFIX` -> [start, end] inclusive; null = no (usable) range,
// serve the whole file; 'unsatisfiable' -> 416. Multi-range requests get the whole file.
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header?.trim() ?? '');
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] !== '' && m[2] !== '' && Number(m[2]) < Number(m[1])) return null; // bytes=5-2: invalid, so ignored (RFC 9110 14.2)
  const [start, end] = m[1] === ''
    ? [Math.max(0, size - Number(m[2])), size - 1]
    : [Number(m[1]), Math.min(size - 1, m[2] === '' ? Infinity : Number(m[2]))];
  return start >= size || end < start ? 'unsatisfiable' : [start, end]; // also bytes=-0, and any range of an empty file
}

// Stream file[start..end] to res, applying a drop-after or corrupt fault on the way.
async function sendBody(res, file, start, end, fault) {
  const length = end - start + 1;
  const dropAt = fault?.modes.has('drop-after') ? (fault.bytes ?? Math.floor(length / 2)) : Infinity;
  const flipAt = fault?.modes.has('corrupt') ? Math.floor(length / 2) : -1;
  const stream = createReadStream(file, { start, end });
  let sent = 0;
  try {
    for await (let chunk of stream) {
      if (res.destroyed) return;
      if (flipAt >= sent && flipAt < sent + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[flipAt - sent] ^= 0xff;
      }
      if (sent + chunk.length >= dropAt) {
        // Flush what the client should receive, then cut the connection mid-body.
        res.write(chunk.subarray(0, dropAt - sent), () => res.socket?.destroy());
        return;
      }
      sent += chunk.length;
      if (!res.write(chunk)) await drained(res);
    }
    res.end();
  } finally {
    stream.destroy();
  }
}

function drained(res) {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      root: { type: 'string' },
      mount: { type: 'string', multiple: true, default: [] },
      'test-hooks': { type: 'boolean', default: false },
    },
  });
  const mounts = {};
  for (const spec of values.mount) {
    const eq = spec.indexOf('=');
    if (!spec.startsWith('/') || eq < 0) throw new Error(`--mount wants /prefix=DIR, got ${spec}`);
    mounts[spec.slice(0, eq)] = spec.slice(eq + 1);
  }
  return { port: Number(values.port), host: values.host, root: values.root ?? WWW, mounts, testHooks: values['test-hooks'] };
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  try {
    const { url } = await startServer(parseCli(process.argv.slice(2)));
    console.log(`sdweb: serving ${url}`);
  } catch (err) {
    console.error(`sdweb: ${err.message}`);
    process.exit(1);
  }
}

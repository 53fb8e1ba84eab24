// Service worker: the app shell works offline. Weights are NOT handled here — cache.js keeps
// them in IndexedDB (with hashes and resumable downloads), so model requests pass straight through.
//
// Strategy: network-first for the shell (a rebuilt wasm or edited JS is picked up whenever the
// server is reachable), falling back to the precached copy when offline.

const VERSION = 'v1';
const CACHE = `sdweb-shell-${VERSION}`;

// Relative to this file's URL, so the app works under any path prefix. Keep this list exact:
// install fails if one of these is missing, which is what we want to notice.
const SHELL = [
  'index.html', 'app.js', 'style.css', 'sdweb.js', 'worker.js', 'cache.js', 'sha256.js',
  'sd-generator.js', 'progress-text.js', 'mask-editor.js',
  'app/status.js', 'app/format.js', 'app/model-picker.js', 'app/cached-models.js', 'app/generate-form.js',
  'app/gallery.js', 'app/init-image.js', 'app/output-size.js', 'app/image-drop.js',
  'manifest.webmanifest', 'icon.svg', 'pkg/sdweb.js', 'pkg/sdweb_bg.wasm',
];
const SHELL_URLS = new Set(SHELL.map((p) => new URL(p, self.registration.scope).href));
const INDEX_URL = new URL('index.html', self.registration.scope).href;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // cache: 'reload' skips the HTTP cache so a fresh install never stores stale files.
    await cache.addAll(SHELL.map((p) => new Request(p, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const names = await caches.keys();
    await Promise.all(names.filter((n) => n.startsWith('sdweb-shell-') && n !== CACHE).map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

function isShellRequest(req) {
  if (req.method !== 'GET') return false;
  if (req.headers.has('range')) return false;           // partial weight downloads
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return false; // Hugging Face, CDNs, ...
  if (url.pathname.includes('/models/')) return false;   // bundled demo weights
  return true;
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (!isShellRequest(req)) return;   // not calling respondWith = the browser handles it normally
  event.respondWith((async () => {
    try {
      const res = await fetch(req);
      // Keep the offline copy current, but only for files that belong to the shell.
      const key = req.mode === 'navigate' && new URL(req.url).pathname.endsWith('/') ? INDEX_URL : req.url.split('?')[0];
      if (res.ok && res.type === 'basic' && SHELL_URLS.has(key)) {
        const copy = res.clone();
        event.waitUntil(caches.open(CACHE).then((c) => c.put(key, copy)));
      }
      return res;
    } catch (err) {
      const cache = await caches.open(CACHE);
      // A directory URL ("/", "/app/") is the shell's index.html; other misses stay misses.
      const dirNav = req.mode === 'navigate' && new URL(req.url).pathname.endsWith('/');
      const hit = await cache.match(dirNav ? INDEX_URL : req, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});

// The generator page. All heavy lifting happens in sdweb.js (a Web Worker running the wasm
// core); this file only wires the form, progress, gallery and cache list to that API.
import { createGenerator, checkWebGPU, listCachedModels, deleteCachedModel, MODELS } from './sdweb.js';

const $ = (id) => document.getElementById(id);
const el = {
  model: $('model'), loadModel: $('load-model'), modelNote: $('model-note'),
  prompt: $('prompt'), negative: $('negative'), steps: $('steps'), guidance: $('guidance'),
  scheduler: $('scheduler'), width: $('width'), height: $('height'),
  seed: $('seed'), randomSeed: $('random-seed'), reuseSeed: $('reuse-seed'),
  form: $('form'), generate: $('generate'), stop: $('stop'),
  progress: $('progress'), phase: $('phase'),
  stage: $('stage'), result: $('result'), preview: $('preview'),
  resultMeta: $('result-meta'), resultInfo: $('result-info'), download: $('download'),
  gallery: $('gallery'), galleryEmpty: $('gallery-empty'), cached: $('cached-models'),
  error: $('error'), errorText: $('error-text'), errorClose: $('error-close'),
  webgpuMissing: $('webgpu-missing'), webgpuReason: $('webgpu-reason'),
};

const SCHEDULER_NAMES = {
  ddim: 'DDIM', euler: 'Euler', 'euler-a': 'Euler ancestral', 'dpmpp-2m': 'DPM++ 2M',
  'dpmpp-2m-karras': 'DPM++ 2M Karras', lcm: 'LCM', pndm: 'PNDM',
};

// Test hook. `ready` first settles with the first model load (resolves with gen.info); each
// later model switch replaces it with that load's promise. `lastResult` is the newest image.
let firstReady;
const app = (window.sdwebApp = {
  ready: new Promise((resolve, reject) => { firstReady = { resolve, reject }; }),
  lastResult: null, generator: null,
});
app.ready.catch(() => {});   // failures are shown in #error; don't also report them as unhandled

let gen = null;          // the loaded generator, or null
let loadToken = 0;       // bumps on every load so a slow, superseded load is discarded
let running = null;      // AbortController of the generation in progress
let webgpuOk = false;
let persistAsked = false;
let cachedList = [];     // last listCachedModels() result

// ---------- small helpers ----------

const fmtBytes = (n) => {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} MB`;
  return `${Math.max(1, Math.round(n / 1e3))} kB`;
};
const mb = (n) => { const v = n / 1e6; return v >= 100 ? v.toFixed(0) : v.toFixed(1); };

function showError(err) {
  const msg = (err && err.message) || String(err);
  el.errorText.textContent = msg;
  el.error.hidden = false;
  console.error(err);
}
function clearError() { el.error.hidden = true; el.errorText.textContent = ''; }
el.errorClose.addEventListener('click', clearError);
// Anything that slips through still reaches the user, not only the console.
window.addEventListener('unhandledrejection', (e) => showError(e.reason));
window.addEventListener('error', (e) => showError(e.error || e.message));

function setPhase(text, frac) {
  el.phase.textContent = text;
  // No value attribute = indeterminate bar (compiling, decoding).
  if (frac == null) el.progress.removeAttribute('value');
  else el.progress.value = Math.min(1, Math.max(0, frac));
}

const selectedModel = () => MODELS.find((m) => m.id === el.model.value) || MODELS[0];
const sameUrl = (a, b) => { try { return new URL(a, location.href).href === new URL(b, location.href).href; } catch { return a === b; } };
const isCached = (m) => cachedList.some((c) => sameUrl(c.model, m.url));

function askPersist() {
  // Weights are large; ask once that the browser not evict them under storage pressure.
  if (persistAsked) return;
  persistAsked = true;
  navigator.storage?.persist?.().catch(() => {});
}

// ---------- model picker ----------

function renderModelOptions() {
  const current = el.model.value;
  el.model.replaceChildren(...MODELS.map((m) => {
    let suffix = '';
    if (!m.bundled) suffix = isCached(m) ? ' · cached' : m.downloadBytes ? ` · ${fmtBytes(m.downloadBytes)}` : '';
    return new Option(m.name + suffix, m.id);
  }));
  el.model.value = current || (MODELS.find((m) => m.id === 'demo') || MODELS[0]).id;
}

function renderModelNote() {
  const m = selectedModel();
  const parts = [];
  if (m.id === 'demo') {
    parts.push('The demo model is tiny and has random weights: its images are noise-like. ' +
      'Pick SD-Turbo or Stable Diffusion 1.5 for real images.');
  } else if (m.note) parts.push(m.note);
  if (!m.bundled && !isCached(m) && m.downloadBytes) {
    parts.push(`One-time download of ${fmtBytes(m.downloadBytes)}, then cached in this browser.`);
  }
  el.modelNote.textContent = parts.join(' ');
  el.modelNote.classList.toggle('hint-warn', m.id === 'demo');
}

// Bundled or already-cached models load as soon as they are picked; anything that would
// download gigabytes waits for an explicit click on "Download".
function onModelPicked() {
  renderModelNote();
  const m = selectedModel();
  if (gen && sameUrl(gen.info.model, m.url)) { el.loadModel.hidden = true; return; }
  if (m.bundled || isCached(m)) { el.loadModel.hidden = true; loadModel(m); return; }
  loadToken++;   // a load still in flight for the previous pick is now stale
  disposeGenerator();
  el.loadModel.hidden = false;
  el.loadModel.textContent = m.downloadBytes ? `Download ${fmtBytes(m.downloadBytes)}` : 'Download';
  setPhase(`${m.name} is not downloaded yet. Press “${el.loadModel.textContent}” to fetch it.`, 0);
  updateButtons();
}

function disposeGenerator() {
  if (running) running.abort();
  if (gen) { try { gen.dispose(); } catch (e) { console.warn(e); } }
  gen = app.generator = null;
}

function loadModel(m) {
  const token = ++loadToken;
  disposeGenerator();
  clearError();
  el.loadModel.hidden = true;
  updateButtons();
  if (!m.bundled) askPersist();
  setPhase(`Loading ${m.name}…`, null);
  const downloads = new Map();   // file -> {loaded, total}, for the overall download bar

  const onProgress = (ev) => {
    if (token !== loadToken) return;
    if (ev.type === 'download') {
      if (ev.loaded < ev.total) askPersist();
      downloads.set(ev.file, { loaded: ev.loaded, total: ev.total });
      let loaded = 0, total = 0;
      for (const d of downloads.values()) { loaded += d.loaded; total += d.total || 0; }
      total = Math.max(total, m.downloadBytes || 0);
      setPhase(`Downloading ${ev.file} ${mb(ev.loaded)} / ${mb(ev.total)} MB`, total ? loaded / total : null);
    } else if (ev.type === 'load') {
      const n = Math.min(ev.index + 1, ev.count);  // index is 0-based
      setPhase(`Uploading weights to the GPU (${n}/${ev.count}): ${ev.file}`, n / ev.count);
    } else if (ev.type === 'compile') {
      setPhase('Compiling shaders… (first run only; this can take a minute)', null);
    } else {
      onGenerateProgress(ev);
    }
  };

  const p = createGenerator({ model: m.url, onProgress }).then((g) => {
    if (token !== loadToken) { g.dispose(); throw new Error('superseded by another model'); }
    gen = app.generator = g;
    applyInfo(g.info);
    setPhase(`${m.name} ready · native ${g.info.width}×${g.info.height} · ${g.info.f16 ? 'f16' : 'f32'} compute`, 1);
    updateButtons();
    refreshCached();
    firstReady.resolve(g.info);
    return g.info;
  }, (err) => {
    if (token === loadToken) {
      setPhase(`Could not load ${m.name}.`, 0);
      showError(err);
      el.loadModel.textContent = 'Retry';
      el.loadModel.hidden = false;
      updateButtons();
      firstReady.reject(err);
    }
    throw err;
  });
  p.catch(() => {});
  if (loadToken > 1) app.ready = p;   // the first load settles the initial promise instead
  return p;
}

// Form defaults follow the model that was just loaded.
function applyInfo(info) {
  const mult = info.sizeMultiple || 8;
  el.steps.value = info.steps;
  el.guidance.value = info.guidance;
  for (const inp of [el.width, el.height]) { inp.step = mult; inp.min = mult; }
  el.width.value = info.width;
  el.height.value = info.height;
  const def = SCHEDULER_NAMES[info.scheduler] || info.scheduler;
  el.scheduler.replaceChildren(
    new Option(`Model default${def ? ` (${def})` : ''}`, ''),
    ...info.schedulers.map((s) => new Option(SCHEDULER_NAMES[s] || s, s)));
}

// ---------- generation ----------

function updateButtons() {
  el.generate.disabled = !webgpuOk || !gen || !!running;
  el.stop.disabled = !running;
  el.model.disabled = !webgpuOk || !!running;
  el.reuseSeed.disabled = !app.lastResult;
}

let stepStart = 0;
function onGenerateProgress(ev) {
  switch (ev.type) {
    case 'compile': setPhase('Compiling shaders… (first run only; this can take a minute)', null); break;
    case 'step': {
      const left = ev.ms ? ` · ~${Math.ceil(((ev.steps - ev.step) * ev.ms) / 1000)} s left` : '';
      const per = ev.ms ? ` · ${(ev.ms / 1000).toFixed(2)} s/step` : '';
      setPhase(`Step ${ev.step}/${ev.steps}${per}${left}`, ev.step / ev.steps);
      break;
    }
    case 'preview':
      if (ev.bitmap) drawPreview(ev.bitmap);
      break;
    case 'decode': setPhase('Decoding…', null); break;
    case 'done': setPhase(`Done in ${((performance.now() - stepStart) / 1000).toFixed(1)} s`, 1); break;
  }
}

function drawPreview(bitmap) {
  const c = el.preview;
  c.width = bitmap.width; c.height = bitmap.height;
  c.getContext('2d').drawImage(bitmap, 0, 0);
  bitmap.close?.();
  c.hidden = false;
  el.result.hidden = true;
  el.stage.classList.remove('empty');
  el.stage.classList.toggle('pixelated', Math.max(c.width, c.height) < 256);
}

function readParams() {
  const num = (inp) => (inp.value.trim() === '' ? undefined : Number(inp.value));
  let seed;
  if (!el.randomSeed.checked) {
    seed = num(el.seed);
    if (seed === undefined || !Number.isSafeInteger(seed) || seed < 0) {
      throw new Error('Seed must be a whole number ≥ 0 (or tick “Random”).');
    }
  }
  return {
    prompt: el.prompt.value,
    negativePrompt: el.negative.value,
    steps: num(el.steps),
    guidance: num(el.guidance),
    scheduler: el.scheduler.value || undefined,
    width: num(el.width),
    height: num(el.height),
    seed,
  };
}

async function generate() {
  if (!gen || running) return;
  clearError();
  let params;
  try { params = readParams(); } catch (e) { showError(e); return; }
  running = new AbortController();
  updateButtons();
  stepStart = performance.now();
  setPhase('Starting…', 0);
  try {
    const res = await gen.generate({ ...params, signal: running.signal });
    showResult(res, true);
  } catch (err) {
    if (err && err.name === 'AbortError') setPhase('Stopped.', 0);
    else { setPhase('Failed.', 0); showError(err); }
    // Fall back to the last finished image rather than a stale preview.
    el.preview.hidden = true;
    el.result.hidden = !el.result.src;
    el.stage.classList.toggle('empty', !el.result.src);
  } finally {
    running = null;
    updateButtons();
  }
}

function showResult(res, isNew) {
  const url = res.url || (res.url = URL.createObjectURL(res.png));
  el.result.src = url;
  el.result.alt = `Generated image: ${promptOf(res)}`;
  el.result.hidden = false;
  el.preview.hidden = true;
  el.stage.classList.remove('empty');
  el.stage.classList.toggle('pixelated', Math.max(res.width, res.height) < 256);
  el.download.href = url;
  el.download.download = `sdweb-${res.seed}.png`;
  const t = res.timings?.total_ms;
  el.resultInfo.textContent = `Seed ${res.seed} · ${res.width}×${res.height}${t ? ` · ${(t / 1000).toFixed(1)} s` : ''}`;
  el.resultMeta.hidden = false;
  if (isNew) {
    app.lastResult = res;
    addToGallery(res);
    el.reuseSeed.title = `Use seed ${res.seed} from the last image`;
  }
}

// The A1111 text starts with the prompt, up to the first newline.
const promptOf = (res) => (res.parameters || '').split('\n')[0];

function addToGallery(res) {
  const li = document.createElement('li');
  li.className = 'thumb';
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.title = res.parameters;
  btn.setAttribute('aria-label', `Show image with seed ${res.seed}`);
  const img = document.createElement('img');
  img.src = res.url; img.alt = ''; img.loading = 'lazy';
  if (Math.max(res.width, res.height) < 256) img.classList.add('pixelated');
  btn.append(img);
  btn.addEventListener('click', () => showResult(res, false));
  const a = document.createElement('a');
  a.href = res.url; a.download = `sdweb-${res.seed}.png`; a.textContent = a.download;
  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = 'Parameters';
  const pre = document.createElement('pre');
  pre.textContent = res.parameters;
  details.append(summary, pre);
  li.append(btn, a, details);
  el.gallery.prepend(li);
  el.galleryEmpty.hidden = true;
}

// ---------- cached models ----------

async function refreshCached() {
  try { cachedList = await listCachedModels(); } catch (e) { console.warn('listCachedModels failed', e); cachedList = []; }
  renderModelOptions();
  renderModelNote();
  if (!cachedList.length) {
    const li = document.createElement('li');
    li.className = 'hint';
    li.textContent = 'No models cached yet.';
    el.cached.replaceChildren(li);
    return;
  }
  el.cached.replaceChildren(...cachedList.map((c) => {
    const known = MODELS.find((m) => sameUrl(m.url, c.model));
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'cached-name';
    name.textContent = known ? known.name : c.model;
    name.title = c.model + (c.revision ? ` @ ${c.revision}` : '');
    const size = document.createElement('span');
    size.className = 'cached-size';
    size.textContent = `${fmtBytes(c.bytes)} · ${c.files} file${c.files === 1 ? '' : 's'}`;
    const del = document.createElement('button');
    del.type = 'button'; del.className = 'btn btn-small'; del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete cached ${name.textContent}`);
    del.addEventListener('click', async () => {
      del.disabled = true;
      try { await deleteCachedModel(c.model); } catch (e) { showError(e); }
      refreshCached();
    });
    li.append(name, size, del);
    return li;
  }));
}

// ---------- wiring ----------

el.form.addEventListener('submit', (e) => { e.preventDefault(); generate(); });
el.stop.addEventListener('click', () => running?.abort());
el.model.addEventListener('change', onModelPicked);
el.loadModel.addEventListener('click', () => loadModel(selectedModel()));
el.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
});
el.randomSeed.addEventListener('change', () => {
  el.seed.disabled = el.randomSeed.checked;
  if (!el.randomSeed.checked && el.seed.value === '' && app.lastResult) el.seed.value = app.lastResult.seed;
  if (!el.randomSeed.checked) el.seed.focus();
});
el.reuseSeed.addEventListener('click', () => {
  if (!app.lastResult) return;
  el.randomSeed.checked = false;
  el.seed.disabled = false;
  el.seed.value = app.lastResult.seed;
});

async function start() {
  renderModelOptions();
  renderModelNote();
  refreshCached();
  let gpu;
  try { gpu = await checkWebGPU(); } catch (e) { gpu = { ok: false, reason: e.message || String(e) }; }
  webgpuOk = !!gpu.ok;
  if (!webgpuOk) {
    el.webgpuReason.textContent = gpu.reason || 'This browser does not expose WebGPU.';
    el.webgpuMissing.hidden = false;
    setPhase('WebGPU is required to generate images.', 0);
    firstReady.reject(new Error(gpu.reason || 'WebGPU is not available'));
    updateButtons();
    return;
  }
  onModelPicked();
}

// The shell works offline once the service worker has cached it; weights live in IndexedDB.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker not registered:', e));
}

start();

// The generator page. All heavy lifting happens in sdweb.js (a Web Worker running the wasm
// core); this file only wires the form, progress, gallery and cache list to that API.
import { createGenerator, checkWebGPU, listCachedModels, deleteCachedModel, MODELS, WEIGHT_FORMATS } from './sdweb.js';

const $ = (id) => document.getElementById(id);
const el = {
  model: $('model'), loadModel: $('load-model'), modelNote: $('model-note'),
  weights: $('weights'), weightsNote: $('weights-note'),
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
  initDrop: $('init-drop'), initImage: $('init-image'), initClear: $('init-clear'),
  initPreview: $('init-preview'), initHelp: $('init-help'), initName: $('init-name'), initDims: $('init-dims'),
  initNote: $('init-note'), initNoteText: $('init-note-text'), initSizeAction: $('init-size-action'),
  strength: $('strength'), strengthValue: $('strength-value'), strengthHint: $('strength-hint'), useResult: $('use-result'),
  maskToggle: $('mask-toggle'), maskMode: $('mask-mode'), maskPanel: $('mask-panel'), maskEditor: $('mask-editor'),
  maskImage: $('mask-image'), maskCanvas: $('mask-canvas'), maskCursor: $('mask-cursor'), maskStatus: $('mask-status'),
  brushSize: $('brush-size'), brushSizeValue: $('brush-size-value'),
  maskErase: $('mask-erase'), maskClear: $('mask-clear'), maskInvert: $('mask-invert'),
};

const SCHEDULER_NAMES = {
  ddim: 'DDIM', euler: 'Euler', 'euler-a': 'Euler ancestral', 'dpmpp-2m': 'DPM++ 2M',
  'dpmpp-2m-karras': 'DPM++ 2M Karras', lcm: 'LCM', pndm: 'PNDM',
};

// Test hook. `ready` first settles with the first model load (resolves with gen.info); each
// later model switch replaces it with that load's promise. `lastResult` is the newest image.
// `mask` is the inpainting mask canvas (white = repaint, on black) while a start image is set.
let firstReady;
const app = (window.sdwebApp = {
  ready: new Promise((resolve, reject) => { firstReady = { resolve, reject }; }),
  lastResult: null, generator: null, mask: null,
});
app.ready.catch(() => {});   // failures are shown in #error; don't also report them as unhandled

let gen = null;          // the loaded generator, or null
let loadToken = 0;       // bumps on every load so a slow, superseded load is discarded
let running = null;      // AbortController of the generation in progress
let webgpuOk = false;
let persistAsked = false;
let cachedList = [];     // last listCachedModels() result
// img2img start image: {file, name, width, height, url} or null. `sizeSource` says who set the
// width/height inputs last ('model' | 'image' | 'user'); only a user's own size is kept when an
// image is picked.
let init = null;
let sizeSource = 'model';
let shownResult = null;  // the result on the stage (for "Use as start image")
// The strength slider keeps one value per mode. Inpainting's is null until the user moves the
// slider: generate() then gets no strength and uses its inpainting default (1.0).
const strengthFor = { img2img: 0.8, inpaint: null };

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
  renderWeightsNote();
}

// ---------- weight format (f16 / q8 / q4), sizes shown before anything downloads ----------

function renderWeightsOptions() {
  el.weights.replaceChildren(...WEIGHT_FORMATS.map((f) => new Option(f.name, f.id)));
  el.weights.value = new URLSearchParams(location.search).get('weights') || 'f16';
}

const selectedQuantize = () => (el.weights.value === 'f16' ? undefined : el.weights.value);

function renderWeightsNote() {
  const m = selectedModel();
  const parts = [];
  if (m.downloadBytes) parts.push(`Download ${fmtBytes(m.downloadBytes)}${m.bundled || isCached(m) ? ' (already here)' : ''}`);
  const gpu = m.gpuBytes?.[el.weights.value];
  if (gpu) parts.push(`GPU memory for the weights ≈ ${fmtBytes(gpu)} (f16 compute; 512×512 generation needs more)`);
  const stored = m.storedBytes?.[el.weights.value];
  if (selectedQuantize()) parts.push(`Quantised while loading: the download is the f16 files; the cache then keeps only the quantised copy${stored ? ` (${fmtBytes(stored)})` : ''}`);
  el.weightsNote.textContent = parts.join(' · ');
}

function onWeightsPicked() {
  renderWeightsNote();
  const m = selectedModel();
  if (gen && (m.bundled || isCached(m))) loadModel(m);
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
    } else if (ev.type === 'quantize') {
      setPhase(`Quantising ${ev.file} to ${el.weights.value} (once; the cache keeps the small copy) ${mb(ev.loaded)} / ${mb(ev.total)} MB`, ev.total ? ev.loaded / ev.total : null);
    } else if (ev.type === 'load') {
      const n = Math.min(ev.index + 1, ev.count);  // index is 0-based
      setPhase(`Uploading weights to the GPU (${n}/${ev.count}): ${ev.file}`, n / ev.count);
    } else if (ev.type === 'compile') {
      setPhase('Compiling shaders… (first run only; this can take a minute)', null);
    } else {
      onGenerateProgress(ev);
    }
  };

  // ?taesd=URL adds TAESD (image-sized step previews), e.g. ?taesd=https://huggingface.co/madebyollin/taesd/resolve/main
  const taesd = new URLSearchParams(location.search).get('taesd') || undefined;
  // ?portable: neither subgroups nor shader-f16, as Safari and Firefox offer (see sdweb.js).
  const portable = new URLSearchParams(location.search).has('portable');
  const p = createGenerator({ model: m.url, onProgress, taesd, quantize: selectedQuantize(), portable }).then((g) => {
    if (token !== loadToken) { g.dispose(); throw new Error('superseded by another model'); }
    gen = app.generator = g;
    applyInfo(g.info);
    setPhase(`${m.name} ready · native ${g.info.width}×${g.info.height} · ${g.info.f16 ? 'f16' : 'f32'} compute · ${el.weights.value} weights`, 1);
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
  sizeSource = 'model';
  if (init) fitSizeToImage();
  updateInitNote();
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

let target = null;   // {width, height} of the image being generated, for the preview's size
function drawPreview(bitmap) {
  const c = el.preview;
  app.lastPreview = { width: bitmap.width, height: bitmap.height };
  // The preview is at latent resolution; draw it at the final image's size (smoothly) so it
  // fills the same space as the finished image will.
  const fits = target && target.width * bitmap.height === target.height * bitmap.width;
  const w = fits ? target.width : bitmap.width, h = fits ? target.height : bitmap.height;
  const small = Math.max(w, h) < 256;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const ctx = c.getContext('2d');
  ctx.imageSmoothingEnabled = !small;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close?.();
  c.hidden = false;
  el.result.hidden = true;
  el.stage.classList.remove('empty');
  el.stage.classList.toggle('pixelated', small);
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
    ...(init ? { initImage: init.file, ...initParams() } : {}),
  };
}

// img2img: the slider's strength. Inpainting: a copy of the mask (so painting during the run
// doesn't change it), and a strength only if the user chose one.
function initParams() {
  if (!maskOn()) return { strength: Number(el.strength.value) };
  if (!settleMask()) throw new Error(MASK_EMPTY);
  const copy = document.createElement('canvas');
  copy.width = mask.canvas.width;
  copy.height = mask.canvas.height;
  copy.getContext('2d').drawImage(mask.canvas, 0, 0);
  return { mask: copy, ...(strengthFor.inpaint != null ? { strength: strengthFor.inpaint } : {}) };
}

async function generate() {
  if (!gen || running) return;
  clearError();
  let params;
  try { params = readParams(); } catch (e) {
    showError(e);
    if (maskOn()) el.maskPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    return;
  }
  running = new AbortController();
  updateButtons();
  stepStart = performance.now();
  const m = gen.info.sizeMultiple || 8;
  target = {
    width: params.width ?? (init ? fitDown(init.width, m) : gen.info.width),
    height: params.height ?? (init ? fitDown(init.height, m) : gen.info.height),
  };
  setPhase(params.initImage ? 'Encoding the start image…' : 'Starting…', 0);
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
    target = null;
    updateButtons();
  }
}

function showResult(res, isNew) {
  shownResult = res;
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
  const i2i = isImg2img(res) ? ` · ${kindOf(res)} ${strengthOf(res)}` : '';
  el.resultInfo.textContent = `Seed ${res.seed} · ${res.width}×${res.height}${i2i}${t ? ` · ${(t / 1000).toFixed(1)} s` : ''}`;
  el.resultMeta.hidden = false;
  if (isNew) {
    app.lastResult = res;
    addToGallery(res);
    el.reuseSeed.title = `Use seed ${res.seed} from the last image`;
  }
}

// The A1111 text starts with the prompt, up to the first newline.
const promptOf = (res) => (res.parameters || '').split('\n')[0];
// Every result says what made it (mode: txt2img | img2img | inpaint, and its strength).
const isImg2img = (res) => res.mode === 'img2img' || res.mode === 'inpaint';
const kindOf = (res) => (isImg2img(res) ? res.mode : '');
const strengthOf = (res) => String(res.strength ?? '');

function addToGallery(res) {
  const li = document.createElement('li');
  li.className = 'thumb';
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.title = res.parameters;
  const kind = kindOf(res);
  btn.setAttribute('aria-label', `Show ${kind === 'inpaint' ? 'inpainted ' : kind ? 'img2img ' : ''}image with seed ${res.seed}`);
  const img = document.createElement('img');
  img.src = res.url; img.alt = ''; img.loading = 'lazy';
  if (Math.max(res.width, res.height) < 256) img.classList.add('pixelated');
  btn.append(img);
  if (kind) {
    li.classList.add(kind);
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = kind;
    badge.setAttribute('aria-hidden', 'true');   // the button's label already says so
    btn.append(badge);
  }
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

// ---------- img2img: the start image ----------

const fitDown = (v, m) => Math.max(m, Math.floor(v / m) * m);
const sizeMultiple = () => gen?.info.sizeMultiple || Number(el.width.step) || 8;

function fitSizeToImage() {
  const m = sizeMultiple();
  el.width.value = fitDown(init.width, m);
  el.height.value = fitDown(init.height, m);
  sizeSource = 'image';
}

// Native area of the model (at least 512²): sizes far beyond it are slow and may not fit the GPU.
const comfortArea = () => Math.max((gen?.info.width || 512) * (gen?.info.height || 512), 512 * 512);
const isLarge = (w, h) => w * h > 2.25 * comfortArea();

// The image's size scaled down (aspect kept) to about the comfortable area.
function scaledImageSize() {
  const m = sizeMultiple();
  const k = Math.min(1, Math.sqrt(comfortArea() / (init.width * init.height)));
  return { w: fitDown(Math.round(init.width * k), m), h: fitDown(Math.round(init.height * k), m) };
}
function scaleSizeToModel() {
  const { w, h } = scaledImageSize();
  el.width.value = w;
  el.height.value = h;
  sizeSource = 'image';
}

// The note under the drop zone: rounding, a size that differs from the image's, or one that is
// far larger than the model was trained on. Its button offers the obvious fix.
let sizeAction = null;
function updateInitNote() {
  let text = '', action = null, label = '';
  if (init) {
    const m = sizeMultiple();
    const fw = fitDown(init.width, m), fh = fitDown(init.height, m);
    const w = Number(el.width.value), h = Number(el.height.value);
    const nw = gen?.info.width || 512, nh = gen?.info.height || 512;
    const s = scaledImageSize();
    if (w !== fw || h !== fh) {
      text = `The ${init.width}×${init.height} image will be resized to ${w}×${h}.`;
      if (!isLarge(fw, fh)) { action = fitSizeToImage; label = `Use ${fw}×${fh}`; }
      else if (w !== s.w || h !== s.h) { action = scaleSizeToModel; label = `Use ${s.w}×${s.h}`; }
    } else if (fw !== init.width || fh !== init.height) {
      text = `Size rounded down from ${init.width}×${init.height} to ${fw}×${fh} (a multiple of ${m}).`;
    }
    if (isLarge(w, h)) {
      text += `${text ? ' ' : ''}${w}×${h} is large for this model (native ${nw}×${nh}): slow, and it may run out of GPU memory.`;
      action = scaleSizeToModel; label = `Scale to ${s.w}×${s.h}`;
    }
  }
  sizeAction = action;
  el.initNoteText.textContent = text;
  el.initSizeAction.textContent = label;
  el.initSizeAction.hidden = !action;
  el.initNote.hidden = !text;
}
el.initSizeAction.addEventListener('click', () => { sizeAction?.(); updateInitNote(); });

async function setInitImage(file, name) {
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    showError(`“${name || file.name || 'That file'}” is not an image.`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    showError(`Could not read “${name || file.name || 'that image'}” as an image (${e.message || e}).`);
    return;
  }
  const { width, height } = bitmap;
  bitmap.close();
  clearError();
  if (init) URL.revokeObjectURL(init.url);
  init = { file, name: name || file.name || 'image', width, height, url: URL.createObjectURL(file) };
  if (sizeSource !== 'user') fitSizeToImage();
  renderInit();
}

function clearInitImage() {
  if (!init) return;
  URL.revokeObjectURL(init.url);
  init = null;
  el.initImage.value = '';
  if (sizeSource === 'image' && gen) {
    el.width.value = gen.info.width;
    el.height.value = gen.info.height;
    sizeSource = 'model';
  }
  renderInit();
}

function renderInit() {
  el.initDrop.classList.toggle('has-image', !!init);
  el.initPreview.hidden = !init;
  el.initClear.hidden = !init;
  el.initName.hidden = el.initDims.hidden = !init;
  el.initHelp.hidden = !!init;
  el.strength.disabled = !init;
  el.maskToggle.hidden = !init;
  if (!init) el.maskMode.checked = false;
  if (init !== mask.for) resetMask();
  renderMaskMode();
  if (init) {
    el.initPreview.src = init.url;
    el.initPreview.alt = `Start image: ${init.name}`;
    el.initName.textContent = init.name;
    el.initName.title = init.name;
    el.initDims.textContent = `${init.width}×${init.height} · drop, paste or click to replace`;
  } else {
    el.initPreview.removeAttribute('src');
    el.initPreview.alt = '';
  }
  updateInitNote();
}

const renderStrength = () => { el.strengthValue.textContent = Number(el.strength.value).toFixed(2); };
el.strength.addEventListener('input', () => {
  strengthFor[maskOn() ? 'inpaint' : 'img2img'] = Number(el.strength.value);
  renderStrength();
});
renderStrength();

el.initImage.addEventListener('change', () => {
  const file = el.initImage.files?.[0];
  if (file) setInitImage(file);
});
el.initClear.addEventListener('click', () => { clearInitImage(); el.initImage.focus(); });
// The whole drop zone opens the file picker (its own label and button do their own thing).
el.initDrop.addEventListener('click', (e) => {
  if (e.target.closest('button, label, input, a')) return;
  el.initImage.click();
});

const imageFileOf = (dt) => {
  for (const item of dt?.items || []) {
    if (item.kind === 'file' && item.type.startsWith('image/')) return item.getAsFile();
  }
  return [...(dt?.files || [])].find((f) => f.type.startsWith('image/')) || null;
};
const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');

// Drag and drop: the zone highlights while a file is dragged over the page; a drop anywhere on
// the page is taken as the start image (rather than the browser navigating away to the file).
let dragDepth = 0;
window.addEventListener('dragenter', (e) => {
  if (!hasFiles(e)) return;
  dragDepth++;
  el.initDrop.classList.add('page-drag');
});
window.addEventListener('dragleave', (e) => {
  if (!hasFiles(e)) return;
  if (--dragDepth <= 0) { dragDepth = 0; el.initDrop.classList.remove('page-drag', 'dragover'); }
});
// An image dragged from this page (the result, a gallery thumbnail) comes as a URL, not a file.
const hasUrl = (e) => [...(e.dataTransfer?.types || [])].includes('text/uri-list');
window.addEventListener('dragover', (e) => {
  const onZone = el.initDrop.contains(e.target);
  if (!hasFiles(e) && !(onZone && hasUrl(e))) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
  el.initDrop.classList.toggle('dragover', onZone);
});
el.initDrop.addEventListener('dragleave', (e) => {
  if (!el.initDrop.contains(e.relatedTarget)) el.initDrop.classList.remove('dragover');
});
window.addEventListener('drop', async (e) => {
  const onZone = el.initDrop.contains(e.target);
  if (!hasFiles(e) && !(onZone && hasUrl(e))) return;
  e.preventDefault();
  dragDepth = 0;
  el.initDrop.classList.remove('page-drag', 'dragover');
  const file = imageFileOf(e.dataTransfer);
  if (file) { setInitImage(file); return; }
  const url = e.dataTransfer.getData('text/uri-list').split('\n').find((l) => l && !l.startsWith('#'))?.trim();
  if (url) {
    try {
      const blob = await (await fetch(url)).blob();
      if (blob.type.startsWith('image/')) { setInitImage(blob, url.startsWith('blob:') ? 'generated image.png' : decodeURIComponent(url.split(/[/?#]/).filter(Boolean).pop() || 'image')); return; }
    } catch { /* a cross-origin image without CORS: fall through */ }
  }
  showError('Drop an image file (PNG, JPEG, WebP…) to start from it.');
});

// Pasting an image anywhere on the page sets it, unless a text field is being pasted into and
// the clipboard also has text (then the text paste goes ahead as usual).
document.addEventListener('paste', (e) => {
  const file = imageFileOf(e.clipboardData);
  if (!file) return;
  const t = e.target;
  const editing = t instanceof HTMLTextAreaElement || (t instanceof HTMLInputElement && !['file', 'checkbox', 'range', 'button', 'submit'].includes(t.type)) || t?.isContentEditable;
  if (editing && e.clipboardData.types.includes('text/plain')) return;
  e.preventDefault();
  const ext = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg').replace(/\+.*/, '');
  setInitImage(file, file.name && file.name !== `image.${ext}` ? file.name : `pasted image.${ext}`);
});

// Width/height typed by the user are theirs; an image no longer overrides them.
for (const inp of [el.width, el.height]) {
  inp.addEventListener('input', () => { sizeSource = 'user'; updateInitNote(); });
}

el.useResult.addEventListener('click', () => {
  const res = shownResult;
  if (!res) return;
  setInitImage(res.png, `sdweb-${res.seed}.png`);
  el.initDrop.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
});

// ---------- inpainting: the mask ----------

// `mask.canvas` is the mask itself, at the start image's natural size: opaque white (repaint)
// on black (keep); generate() gets a copy of it. #mask-canvas over the image only displays it
// (red, made half transparent by CSS). Strokes are drawn on both; when a stroke ends the mask is
// snapped to pure black and white and the overlay redrawn from it, so the two always agree.
const mask = { for: null, canvas: null, ctx: null, overlay: null, painted: 0 };
let stroke = null;        // {id, last: {x, y}, erase} while a pointer is painting
let maskModeShown = false;
const IMG2IMG_HINT = el.strengthHint.textContent;
const INPAINT_HINT = 'Inpainting usually wants 1: the painted area is redrawn from scratch. Lower keeps some of what is there.';

const maskOn = () => !!init && el.maskMode.checked;
const MASK_EMPTY = 'Paint the area to repaint first (on the image under “Inpainting mask”), or turn off “Paint a mask”.';

function resetMask() {
  mask.for = init;
  stroke = null;
  el.maskCursor.hidden = true;
  if (!init) {
    mask.canvas = mask.ctx = app.mask = null;
    el.maskImage.removeAttribute('src');
    el.maskCanvas.width = el.maskCanvas.height = 1;
    return;
  }
  const { width: w, height: h } = init;
  mask.canvas = document.createElement('canvas');
  mask.canvas.width = w;
  mask.canvas.height = h;
  mask.ctx = mask.canvas.getContext('2d', { willReadFrequently: true });
  mask.ctx.fillStyle = '#000';
  mask.ctx.fillRect(0, 0, w, h);
  el.maskCanvas.width = w;     // also clears the overlay
  el.maskCanvas.height = h;
  mask.overlay = el.maskCanvas.getContext('2d');
  mask.painted = 0;
  app.mask = mask.canvas;
  el.maskImage.src = init.url;
  el.maskEditor.style.setProperty('--ar', String(w / h));
  el.maskEditor.classList.toggle('pixelated', Math.max(w, h) < 256);
  const short = Math.min(w, h);
  el.brushSize.max = Math.max(8, Math.round(short / 2));
  el.brushSize.value = Math.max(1, Math.round(short / 8));
  renderBrush();
  renderMaskStatus();
}

// Shows or hides the editor; the strength slider switches to the mode's own value.
function renderMaskMode() {
  const on = maskOn();
  el.maskPanel.hidden = !on;
  if (on === maskModeShown) return;
  maskModeShown = on;
  el.strength.value = on ? (strengthFor.inpaint ?? 1) : strengthFor.img2img;
  renderStrength();
  el.strengthHint.textContent = on ? INPAINT_HINT : IMG2IMG_HINT;
}

function renderMaskStatus() {
  const total = mask.canvas ? mask.canvas.width * mask.canvas.height : 0;
  if (!mask.painted || !total) { el.maskStatus.textContent = 'Nothing painted yet.'; return; }
  const pct = (100 * mask.painted) / total;
  el.maskStatus.textContent = `${pct < 1 ? '<1' : pct > 99 && pct < 100 ? '>99' : Math.round(pct)}% of the image will be repainted.`;
}

// Snaps the mask to pure white/black, redraws the overlay from it and returns how many pixels
// are painted.
function settleMask() {
  if (!mask.canvas) return 0;
  const { width: w, height: h } = mask.canvas;
  const img = mask.ctx.getImageData(0, 0, w, h);
  const m = new Uint32Array(img.data.buffer);
  const view = mask.overlay.createImageData(w, h);
  const o = new Uint32Array(view.data.buffer);
  // Pixels as little-endian uint32 (ABGR): opaque white, opaque black, opaque red.
  const WHITE = 0xffffffff, BLACK = 0xff000000, RED = 0xff0000ff;
  let painted = 0;
  for (let i = 0; i < m.length; i++) {
    if ((m[i] & 0xff) >= 128) { m[i] = WHITE; o[i] = RED; painted++; } else m[i] = BLACK;
  }
  mask.ctx.putImageData(img, 0, 0);
  mask.overlay.putImageData(view, 0, 0);
  mask.painted = painted;
  renderMaskStatus();
  // Once something is painted, the "paint first" error has been dealt with.
  if (painted && !el.error.hidden && el.errorText.textContent === MASK_EMPTY) clearError();
  return painted;
}

function maskPoint(e) {
  const r = el.maskCanvas.getBoundingClientRect();
  return {
    x: ((e.clientX - r.left) * el.maskCanvas.width) / r.width,
    y: ((e.clientY - r.top) * el.maskCanvas.height) / r.height,
  };
}

function paintSegment(a, b, erase) {
  const size = Number(el.brushSize.value);
  const layers = [
    [mask.ctx, erase ? '#000' : '#fff', 'source-over'],
    [mask.overlay, '#f00', erase ? 'destination-out' : 'source-over'],
  ];
  for (const [ctx, color, op] of layers) {
    ctx.globalCompositeOperation = op;
    ctx.fillStyle = ctx.strokeStyle = color;
    ctx.lineWidth = size;
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath();
    if (a.x === b.x && a.y === b.y) {
      ctx.arc(a.x, a.y, size / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = 'source-over';
  }
}

// The brush outline that follows a mouse or pen (touch has nothing hovering to show).
function moveCursor(e) {
  if (e.pointerType === 'touch' || !mask.canvas) { el.maskCursor.hidden = true; return; }
  const r = el.maskCanvas.getBoundingClientRect();
  const box = el.maskEditor.getBoundingClientRect();
  const d = (Number(el.brushSize.value) * r.width) / el.maskCanvas.width;
  const c = el.maskCursor;
  c.style.width = c.style.height = `${d}px`;
  c.style.transform = `translate(${e.clientX - box.left - d / 2}px, ${e.clientY - box.top - d / 2}px)`;
  c.classList.toggle('erase', stroke ? stroke.erase : el.maskErase.checked);
  c.hidden = false;
}

el.maskCanvas.addEventListener('pointerdown', (e) => {
  if (stroke || !mask.canvas) return;
  // Main button of a mouse, pen tip or eraser end (button 5), or a finger.
  if (e.button !== 0 && !(e.pointerType === 'pen' && e.button === 5)) return;
  e.preventDefault();
  el.maskCanvas.setPointerCapture(e.pointerId);
  const p = maskPoint(e);
  stroke = { id: e.pointerId, last: p, erase: el.maskErase.checked || e.button === 5 || (e.buttons & 32) !== 0 };
  paintSegment(p, p, stroke.erase);
  moveCursor(e);
});
el.maskCanvas.addEventListener('pointermove', (e) => {
  moveCursor(e);
  if (!stroke || e.pointerId !== stroke.id) return;
  const events = e.getCoalescedEvents?.() ?? [];
  for (const ev of events.length ? events : [e]) {
    const p = maskPoint(ev);
    paintSegment(stroke.last, p, stroke.erase);
    stroke.last = p;
  }
});
const endStroke = (e) => {
  if (!stroke || e.pointerId !== stroke.id) return;
  stroke = null;
  settleMask();
};
el.maskCanvas.addEventListener('pointerup', endStroke);
el.maskCanvas.addEventListener('pointercancel', endStroke);
el.maskCanvas.addEventListener('lostpointercapture', endStroke);
el.maskCanvas.addEventListener('pointerleave', () => { if (!stroke) el.maskCursor.hidden = true; });
el.maskCanvas.addEventListener('contextmenu', (e) => e.preventDefault());

const renderBrush = () => { el.brushSizeValue.textContent = `${el.brushSize.value} px`; };
el.brushSize.addEventListener('input', renderBrush);
el.maskErase.addEventListener('change', () => el.maskCursor.classList.toggle('erase', el.maskErase.checked));

el.maskClear.addEventListener('click', () => {
  if (!mask.canvas) return;
  mask.ctx.fillStyle = '#000';
  mask.ctx.fillRect(0, 0, mask.canvas.width, mask.canvas.height);
  settleMask();
});
el.maskInvert.addEventListener('click', () => {
  if (!mask.canvas) return;
  mask.ctx.globalCompositeOperation = 'difference';
  mask.ctx.fillStyle = '#fff';
  mask.ctx.fillRect(0, 0, mask.canvas.width, mask.canvas.height);
  mask.ctx.globalCompositeOperation = 'source-over';
  settleMask();
});

el.maskMode.addEventListener('change', () => {
  renderMaskMode();
  if (maskOn()) el.maskPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
});

// ---------- wiring ----------

el.form.addEventListener('submit', (e) => { e.preventDefault(); generate(); });
el.stop.addEventListener('click', () => running?.abort());
el.model.addEventListener('change', onModelPicked);
el.weights.addEventListener('change', onWeightsPicked);
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
  renderWeightsOptions();
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

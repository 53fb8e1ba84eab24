// The model and weight-format pickers. Owns the loaded generator: bundled or already-cached
// models load as soon as they are picked, anything that would download gigabytes waits for a
// click on "Download"; the notes say what a pick costs (download, GPU memory) before that.
import { createGenerator, MODELS, WEIGHT_FORMATS } from '../sdweb.js';
import { progressText } from '../progress-text.js';
import { fmtBytes } from './format.js';

const sameUrl = (a, b) => { try { return new URL(a, location.href).href === new URL(b, location.href).href; } catch { return a === b; } };
// A load's own events; the rest (steps, previews, ...) come from generations.
const LOAD_EVENTS = new Set(['download', 'quantize', 'load', 'compile']);

/**
 * @typedef {object} PickerElements
 * @property {HTMLSelectElement} model
 * @property {HTMLButtonElement} loadModel
 * @property {HTMLElement} modelNote
 * @property {HTMLSelectElement} weights
 * @property {HTMLElement} weightsNote
 *
 * @typedef {object} PickerDeps
 * @property {(text: string, frac: number | null) => void} setPhase
 * @property {(err: unknown) => void} showError
 * @property {() => void} clearError
 * @property {(info: Record<string, any>) => void} applyInfo form defaults for the model just loaded
 * @property {() => void} refreshCached
 * @property {(ev: { type: string }) => void} onGenerationProgress
 * @property {() => void} stopGeneration the generation in progress, before its generator goes
 * @property {() => void} onChange the generator or WebGPU state changed (buttons follow it)
 */

/**
 * @param {PickerElements} el
 * @param {PickerDeps} deps
 */
export function createModelPicker(el, deps) {
  const query = new URLSearchParams(location.search);
  /** @type {import('../sdweb.js').Generator | null} */
  let gen = null;
  let loadToken = 0;       // bumps on every load so a slow, superseded load is discarded
  let gpuOk = false;
  let persistAsked = false;
  /** @type {{ model: string }[]} */
  let cached = [];         // the last listCachedModels() result
  /** @type {import('../sdweb.js').LoraOption[]} */
  const loras = [];        // LoRAs dropped on the page: merged into the model as it loads
  // `ready` first settles with the first model load (resolves with gen.info); each later load
  // replaces it with its own promise.
  let first;
  let ready = new Promise((resolve, reject) => { first = { resolve, reject }; });
  ready.catch(() => {});   // failures are shown in #error; don't also report them as unhandled

  const selectedModel = () => MODELS.find((m) => m.id === el.model.value) || MODELS[0];
  const selectedQuantize = () => /** @type {'q8_0' | 'q4_0' | undefined} */ (el.weights.value === 'f16' ? undefined : el.weights.value);
  const isCached = (m) => cached.some((c) => sameUrl(c.model, m.url));

  function askPersist() {
    // Weights are large; ask once that the browser not evict them under storage pressure.
    if (persistAsked) return;
    persistAsked = true;
    navigator.storage?.persist?.().catch(() => {});
  }

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

  function renderWeightsOptions() {
    el.weights.replaceChildren(...WEIGHT_FORMATS.map((f) => new Option(f.name, f.id)));
    el.weights.value = query.get('weights') || 'f16';
  }

  // Sizes per weight format (f16 / q8 / q4), shown before anything downloads.
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

  function onModelPicked() {
    renderModelNote();
    const m = selectedModel();
    if (gen && sameUrl(gen.info.model, m.url)) { el.loadModel.hidden = true; return; }
    if (m.bundled || isCached(m)) { el.loadModel.hidden = true; loadModel(m); return; }
    loadToken++;   // a load still in flight for the previous pick is now stale
    disposeGenerator();
    el.loadModel.hidden = false;
    el.loadModel.textContent = m.downloadBytes ? `Download ${fmtBytes(m.downloadBytes)}` : 'Download';
    deps.setPhase(`${m.name} is not downloaded yet. Press “${el.loadModel.textContent}” to fetch it.`, 0);
    deps.onChange();
  }

  function disposeGenerator() {
    deps.stopGeneration();
    if (gen) { try { gen.dispose(); } catch (e) { console.warn(e); } }
    gen = null;
  }

  function loadModel(m) {
    const token = ++loadToken;
    disposeGenerator();
    deps.clearError();
    el.loadModel.hidden = true;
    deps.onChange();
    if (!m.bundled) askPersist();
    deps.setPhase(`Loading ${m.name}…`, null);
    const p = createGenerator({
      model: m.url,
      onProgress: progressFor(m, token),
      // ?taesd=URL adds TAESD (image-sized step previews), e.g. ?taesd=https://huggingface.co/madebyollin/taesd/resolve/main
      taesd: query.get('taesd') || undefined,
      quantize: selectedQuantize(),
      // ?portable: neither subgroups nor shader-f16, as Safari and Firefox offer (see sdweb.js).
      portable: query.has('portable'),
      loras,
    }).then((g) => loaded(m, token, g), (err) => failed(m, token, err));
    p.catch(() => {});
    if (loadToken > 1) ready = p;   // the first load settles the initial promise instead
    return p;
  }

  function loaded(m, token, g) {
    if (token !== loadToken) { g.dispose(); throw new Error('superseded by another model'); }
    gen = g;
    deps.applyInfo(g.info);
    const loraNote = loras.length ? ` · LoRA ${loras.map((l) => `<lora:${l.name.replace(/\.safetensors$/, '')}:${l.weight}>`).join(' ')}` : '';
    deps.setPhase(`${m.name} ready · native ${g.info.width}×${g.info.height} · ${g.info.f16 ? 'f16' : 'f32'} compute · ${el.weights.value} weights${loraNote}`, 1);
    deps.onChange();
    deps.refreshCached();
    first.resolve(g.info);
    return g.info;
  }

  function failed(m, token, err) {
    if (token === loadToken) {
      deps.setPhase(`Could not load ${m.name}.`, 0);
      deps.showError(err);
      el.loadModel.textContent = 'Retry';
      el.loadModel.hidden = false;
      deps.onChange();
      first.reject(err);
    }
    throw err;
  }

  // The generator's progress (its load, and later its generations and restarts) while this
  // load is the current one.
  function progressFor(m, token) {
    const downloads = new Map();   // file -> {loaded, total}, for the overall download bar
    return (ev) => {
      if (token !== loadToken) return;
      if (!LOAD_EVENTS.has(ev.type)) { deps.onGenerationProgress(ev); return; }
      let overall;
      if (ev.type === 'download') {
        if (ev.loaded < ev.total) askPersist();
        downloads.set(ev.file, { loaded: ev.loaded, total: ev.total });
        overall = downloadedOf(downloads, m.downloadBytes);
      }
      const line = progressText(ev, { weights: el.weights.value, overall });
      if (line) deps.setPhase(line.text, line.frac);
    };
  }

  el.model.addEventListener('change', onModelPicked);
  el.weights.addEventListener('change', onWeightsPicked);
  el.loadModel.addEventListener('click', () => loadModel(selectedModel()));

  return {
    /** The loaded generator, or null. */
    get generator() { return gen; },
    /** Settles with the current load (see above). */
    get ready() { return ready; },
    get gpuOk() { return gpuOk; },
    /** Fills the pickers (once, at start). */
    render() { renderWeightsOptions(); renderModelOptions(); renderModelNote(); },
    /** @param {{ model: string }[]} list what the cache holds now */
    setCached(list) { cached = list; renderModelOptions(); renderModelNote(); },
    /** The known model's name for a URL, else the URL. @param {string} url */
    nameOf: (url) => MODELS.find((m) => sameUrl(m.url, url))?.name ?? url,
    /**
     * Adds a LoRA (weight 1; a file of the same name replaces the earlier one) and reloads the
     * model with it: LoRAs are merged into the weights as they load.
     * @param {File} file
     */
    addLora(file) {
      const at = loras.findIndex((l) => l.name === file.name);
      if (at >= 0) loras.splice(at, 1);
      loras.push({ file, weight: 1, name: file.name });
      if (gpuOk && gen) loadModel(selectedModel());
    },
    /** The model can't change during a generation. @param {boolean} busy */
    setLocked(busy) { el.model.disabled = !gpuOk || busy; },
    /** Loads the picked model, once WebGPU has been checked. @param {{ ok: boolean, reason?: string }} gpu */
    start(gpu) {
      gpuOk = !!gpu.ok;
      if (gpuOk) { onModelPicked(); return; }
      deps.setPhase('WebGPU is required to generate images.', 0);
      first.reject(new Error(gpu.reason || 'WebGPU is not available'));
      deps.onChange();
    },
  };
}

// Bytes downloaded over all files of a load; the model's announced size is the least total, so
// the bar does not jump back when a later file starts.
function downloadedOf(downloads, expected) {
  let loaded = 0, total = 0;
  for (const d of downloads.values()) { loaded += d.loaded; total += d.total || 0; }
  return { loaded, total: Math.max(total, expected || 0) };
}

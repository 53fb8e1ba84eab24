// The generator page. All heavy lifting happens in sdweb.js (a Web Worker running the wasm
// core); this file only wires the page's parts (app/, and the <sd-mask-editor> element) to each
// other: which part calls which is all here, each part keeps its own state.
import { checkWebGPU } from './sdweb.js';
import './mask-editor.js';
import { createErrorBox, createStatusLine } from './app/status.js';
import { createModelPicker } from './app/model-picker.js';
import { createCachedModels } from './app/cached-models.js';
import { createGenerateForm } from './app/generate-form.js';
import { createGallery } from './app/gallery.js';
import { createInitImage } from './app/init-image.js';

// `any`: each part's JSDoc (app/*.js) names the element types it expects.
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);

const errors = createErrorBox({ box: $('error'), text: $('error-text'), close: $('error-close') });
// Anything that slips through still reaches the user, not only the console.
window.addEventListener('unhandledrejection', (e) => errors.show(e.reason));
window.addEventListener('error', (e) => errors.show(e.error || e.message));
const setPhase = createStatusLine({ phase: $('phase'), progress: $('progress') });
const maskEditor = /** @type {import('./mask-editor.js').SdMaskEditor} */ (document.querySelector('sd-mask-editor'));

// The parts below call each other only through these arrows, once all of them exist.
const picker = createModelPicker({
  model: $('model'), loadModel: $('load-model'), modelNote: $('model-note'),
  weights: $('weights'), weightsNote: $('weights-note'),
}, {
  setPhase, showError: errors.show, clearError: errors.clear,
  applyInfo: (info) => form.applyInfo(info),
  refreshCached: () => cached.refresh(),
  onGenerationProgress: (ev) => form.onProgress(ev),
  stopGeneration: () => form.stop(),
  onChange: () => updateButtons(),
});

const cached = createCachedModels($('cached-models'), {
  nameOf: picker.nameOf, onList: (list) => picker.setCached(list), showError: errors.show,
});

const initImage = createInitImage({
  drop: $('init-drop'), file: $('init-image'), clear: $('init-clear'), preview: $('init-preview'),
  help: $('init-help'), name: $('init-name'), dims: $('init-dims'),
  size: { width: $('width'), height: $('height'), note: $('init-note'), noteText: $('init-note-text'), action: $('init-size-action') },
  strength: $('strength'), strengthValue: $('strength-value'), strengthHint: $('strength-hint'),
  maskToggle: $('mask-toggle'), maskMode: $('mask-mode'), maskPanel: $('mask-panel'),
  maskEditor,
}, {
  info: () => picker.generator?.info ?? null,
  showError: errors.show, clearError: errors.clear, errorShows: errors.shows,
  // A LoRA dropped on the page joins the model (which reloads with it).
  onLora: (file) => picker.addLora(file),
});

const gallery = createGallery({
  stage: $('stage'), result: $('result'), preview: $('preview'),
  resultMeta: $('result-meta'), resultInfo: $('result-info'), download: $('download'), useResult: $('use-result'),
  gallery: $('gallery'), galleryEmpty: $('gallery-empty'),
}, {
  onUse: (res) => { initImage.set(res.png, `sdweb-${res.seed}.png`); initImage.reveal(); },
});

const form = createGenerateForm({
  form: $('form'), prompt: $('prompt'), negative: $('negative'), steps: $('steps'), guidance: $('guidance'),
  scheduler: $('scheduler'), width: $('width'), height: $('height'),
  seed: $('seed'), randomSeed: $('random-seed'), reuseSeed: $('reuse-seed'), generate: $('generate'), stop: $('stop'),
}, {
  generator: () => picker.generator, initImage, gallery,
  setPhase, showError: errors.show, clearError: errors.clear,
  onChange: () => updateButtons(),
});

function updateButtons() {
  form.renderButtons(picker.gpuOk && !!picker.generator);
  picker.setLocked(form.busy);
}

// Test hook (tests/browser/app.test.mjs). `ready` first settles with the first model load
// (resolves with gen.info); each later model switch replaces it with that load's promise.
// `lastResult` is the newest image, `lastPreview` the newest preview's size, `mask` the
// inpainting mask canvas (white = repaint, on black) while a start image is set.
/** @type {any} */ (window).sdwebApp = Object.defineProperties({}, {
  ready: { get: () => picker.ready, enumerable: true },
  generator: { get: () => picker.generator, enumerable: true },
  lastResult: { get: () => form.lastResult, enumerable: true },
  lastPreview: { get: () => gallery.lastPreview, enumerable: true },
  mask: { get: () => maskEditor.canvas, enumerable: true },
});

async function start() {
  picker.render();
  cached.refresh();
  let gpu;
  try { gpu = await checkWebGPU(); } catch (e) { gpu = { ok: false, reason: e.message || String(e) }; }
  if (!gpu.ok) {
    $('webgpu-reason').textContent = gpu.reason || 'This browser does not expose WebGPU.';
    $('webgpu-missing').hidden = false;
  }
  picker.start(gpu);
}

// The shell works offline once the service worker has cached it; weights live in IndexedDB.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((e) => console.warn('service worker not registered:', e));
}

start();

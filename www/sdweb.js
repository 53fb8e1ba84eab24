// sdweb's JS API: Stable Diffusion on WebGPU, run by the wasm core in a Web Worker.
//
//   const gen = await createGenerator({ model, onProgress });
//   const { png, width, height, seed, parameters, timings } = await gen.generate({ prompt, ... });
//   gen.dispose();
//
// `model` is the base URL of a diffusers repository layout (a Hugging Face `resolve/<rev>`
// URL or a path on this site). Weights are cached in IndexedDB; see README.md for the events.

import { ModelCache } from './cache.js';

const here = (path) => new URL(path, import.meta.url).href;

export const SCHEDULERS = ['ddim', 'euler', 'euler-a', 'dpmpp-2m', 'dpmpp-2m-karras', 'lcm', 'pndm'];

export const MODELS = [
  { id: 'demo', name: 'Demo (tiny, bundled)', url: here('./models/demo'), bundled: true, downloadBytes: 15_400_000,
    note: 'A tiny model with random weights that ships with the page: its images are noise-like. Pick SD-Turbo or SD 1.5 for real images.' },
  // gpuBytes: weights resident on the GPU after loading, per weight format (`sdweb bench
  // --load-only` on the full-size architectures; SD-Turbo is SD 2.1's architecture);
  // storedBytes: the quantised copy the cache keeps (`sdweb quantize` output sizes).
  { id: 'sd-turbo', name: 'SD-Turbo', url: 'https://huggingface.co/stabilityai/sd-turbo/resolve/main', downloadBytes: 2_580_000_000,
    gpuBytes: { f16: 2_830_000_000, q8_0: 1_620_000_000, q4_0: 1_085_000_000 }, storedBytes: { q8_0: 1_374_000_000, q4_0: 925_000_000 },
    note: '512×512 in 1–4 steps without guidance (fp16 weights, 2.6 GB download once).' },
  { id: 'sd15', name: 'Stable Diffusion 1.5', url: 'https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main', downloadBytes: 2_130_000_000,
    gpuBytes: { f16: 2_430_000_000, q8_0: 1_350_000_000, q4_0: 950_000_000 }, storedBytes: { q8_0: 1_136_000_000, q4_0: 697_000_000 },
    note: '512×512, 20–30 steps (fp16 weights, 2.1 GB download once).' },
  // SDXL: the full-size architectures with random weights (README "SDXL and SDXL-Turbo"); base
  // and Turbo share them, so their sizes are the same. q4_0 keeps both text encoders at q8_0.
  { id: 'sdxl-turbo', name: 'SDXL-Turbo', url: 'https://huggingface.co/stabilityai/sdxl-turbo/resolve/main', downloadBytes: 6_938_009_278,
    gpuBytes: { f16: 7_258_833_984, q8_0: 4_037_339_680, q4_0: 3_097_815_584 }, storedBytes: { q4_0: 2_643_724_974 },
    note: 'SDXL distilled: 512×512 in 1–4 steps without guidance (fp16 weights, 6.9 GB download once; q4 needs about 3.1 GB of GPU memory for the weights). Previews: ?taesd=…/madebyollin/taesdxl/resolve/main.' },
  { id: 'sdxl-base', name: 'SDXL 1.0 base', url: 'https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main', downloadBytes: 6_938_009_278,
    gpuBytes: { f16: 7_258_833_984, q8_0: 4_037_339_680, q4_0: 3_097_815_584 }, storedBytes: { q4_0: 2_643_724_974 },
    note: '1024×1024, 20–40 steps (fp16 weights, 6.9 GB download once); a desktop GPU with 8 GB or more. Previews: ?taesd=…/madebyollin/taesdxl/resolve/main.' },
];

/** Weight formats the page offers: q8_0/q4_0 are quantised while loading (GGUF block layouts). */
export const WEIGHT_FORMATS = [
  { id: 'f16', name: 'f16 (full quality)' },
  { id: 'q8_0', name: 'q8 (half the GPU memory, ~identical images)' },
  { id: 'q4_0', name: 'q4 (a third of the GPU memory, small changes)' },
];

/**
 * Whether this browser can run sdweb: {ok, f16, reason} (reason: what the user can do).
 * @returns {Promise<{ ok: boolean, f16: boolean, reason?: string }>}
 */
export async function checkWebGPU() {
  /** @type {any} */
  const navigator = globalThis.navigator;
  const help = 'Use a recent Chrome or Edge (113+) with hardware acceleration on, or Safari 18+ / Firefox with WebGPU enabled; on Linux Chrome needs chrome://flags/#enable-unsafe-webgpu.';
  if (!navigator?.gpu) return { ok: false, f16: false, reason: `This browser has no WebGPU. ${help}` };
  let adapter = null;
  try { adapter = await navigator.gpu.requestAdapter(); } catch { /* reported below */ }
  if (!adapter) return { ok: false, f16: false, reason: `WebGPU is present but no GPU adapter is available (blocklisted GPU or hardware acceleration off). ${help}` };
  return { ok: true, f16: adapter.features.has('shader-f16') };
}

export async function listCachedModels() {
  const cache = await ModelCache.open();
  try { return await cache.listModels(); } finally { cache.close(); }
}

export async function deleteCachedModel(model) {
  const cache = await ModelCache.open();
  try { await cache.deleteModel(String(model).replace(/\/+$/, '')); } finally { cache.close(); }
}

// A module worker must be same-origin with the page; when this file is embedded from another
// origin (the widget), a same-origin blob worker imports ours instead.
function startWorker() {
  const url = here('./worker.js');
  if (new URL(url).origin === globalThis.location?.origin) return new Worker(url, { type: 'module' });
  const shim = URL.createObjectURL(new Blob([`import ${JSON.stringify(url)};`], { type: 'text/javascript' }));
  return new Worker(shim, { type: 'module' });
}

function toError(e) {
  const error = new Error(e.message);
  error.name = e.name || 'Error';
  for (const key of ['code', 'url', 'status', 'needed', 'available']) if (e[key] !== undefined) error[key] = e[key];
  return error;
}

/**
 * `createGenerator`'s `loras` as the worker takes them: absolute URLs, a name and a weight each.
 * @param {LoraOption[]} loras
 */
function loraRequests(loras) {
  if (!Array.isArray(loras)) throw new Error('createGenerator: `loras` must be an array of { url | file, weight }');
  return loras.map(({ url, file, weight = 1, name }, i) => {
    if (!url === !file) throw new Error(`createGenerator: loras[${i}] needs exactly one of \`url\` and \`file\``);
    if (!Number.isFinite(Number(weight))) throw new Error(`createGenerator: loras[${i}].weight ${weight} is not a number`);
    const href = url ? new URL(String(url), globalThis.document?.baseURI ?? globalThis.location?.href).href : undefined;
    const fileName = file instanceof File ? file.name : undefined;
    const base = name ?? fileName ?? decodeURIComponent(href?.split('/').pop() ?? '') ?? '';
    if (!base) throw new Error(`createGenerator: loras[${i}] needs a \`name\` (a Blob has none)`);
    return { url: href, file, weight: Number(weight), name: /\.safetensors$/.test(base) ? base : `${base}.safetensors` };
  });
}

/** A revision pinned in a Hub URL (`.../resolve/<rev>`) keys the cache; else 'main'. */
function revisionOf(model) {
  return /\/resolve\/([^/]+)\/?$/.exec(model)?.[1] ?? 'main';
}

/**
 * @typedef {object} GeneratorOptions
 * @property {string} model base URL of a diffusers repository
 * @property {(event: ProgressEvent) => void} [onProgress]
 * @property {'auto' | 'f32' | 'f16'} [precision]
 * @property {'q8_0' | 'q4_0'} [quantize]
 * @property {'sdweb' | 'burn'} [kernels] which kernels the hot ops run (default sdweb's own WGSL
 *   kernels; burn's ops are the reference they are tested against)
 * @property {string} [revision]
 * @property {string} [taesd] base URL of a TAESD repository
 * @property {boolean} [portable]
 * @property {LoraOption[]} [loras] LoRAs merged into the weights as they load (several add up)
 *
 * @typedef {object} LoraOption a LoRA `.safetensors` file (kohya/A1111 or diffusers/PEFT names)
 * @property {string} [url] where to download it (cached in IndexedDB like weights)
 * @property {Blob} [file] or the file itself (e.g. one dropped on the page)
 * @property {number} [weight] default 1
 * @property {string} [name] what `<lora:NAME:WEIGHT>` prompt tags and `Lora hashes` call it
 *   (its stem); default: the URL's or file's name
 *
 * @typedef {{ type: 'download' | 'quantize', file: string, loaded: number, total: number }
 *   | { type: 'load', file: string, index: number, count: number, loaded: number, total: number }
 *   | { type: 'compile' } | { type: 'compiled', pipelines: number, ms: number }
 *   | { type: 'step', step: number, steps: number, ms: number }
 *   | { type: 'preview', step: number, steps: number, width: number, height: number, pixels: Uint8ClampedArray }
 *   | { type: 'decode' } | { type: 'done' } | { type: 'warning', message: string }
 *   | { type: 'restart', reason: string }} ProgressEvent
 *
 * @typedef {object} Timings per-stage wall times (ms, GPU work included) and GPU dispatch counts
 * @property {number} tokenizeMs
 * @property {number} compileMs the compile pass before the first step (0 when already compiled)
 * @property {number} compiledPipelines
 * @property {number} textEncoderMs
 * @property {number} textEncoderDispatches
 * @property {number[]} unetStepsMs
 * @property {number[]} unetStepDispatches
 * @property {number} vaeDecodeMs
 * @property {number} vaeDecodeDispatches
 * @property {number} totalMs
 *
 * @typedef {object} GeneratorInfo
 * @property {string} model base URL
 * @property {string} name
 * @property {number} steps recommended steps
 * @property {number} guidance recommended guidance
 * @property {number} width native size
 * @property {number} height
 * @property {number} sizeMultiple sizes must be multiples of this
 * @property {string} scheduler the model's own scheduler
 * @property {boolean} f16 computes in f16
 * @property {'sdweb' | 'burn'} kernels
 * @property {string[]} adapterFeatures
 * @property {readonly string[]} schedulers
 *
 * @typedef {object} GenerateOptions
 * @property {string} [prompt]
 * @property {string} [negativePrompt]
 * @property {'a1111' | 'plain'} [promptSyntax] 'a1111' (default): (emphasis), (text:1.3), [less], BREAK, any length; 'plain': diffusers' text cut at 77 tokens
 * @property {number} [steps]
 * @property {number} [guidance]
 * @property {string} [scheduler] one of SCHEDULERS
 * @property {number} [width]
 * @property {number} [height]
 * @property {number} [seed]
 * @property {AbortSignal} [signal]
 * @property {ImageBitmapSource} [initImage] img2img / inpainting start image (any size)
 * @property {number} [strength] in (0, 1]
 * @property {ImageBitmapSource} [mask] inpainting: white = repaint
 * @property {number} [previewEvery] a preview after every this many steps (default 1; 0: none)
 * @property {(event: ProgressEvent) => void} [onProgress] this call's progress
 *
 * @typedef {object} GenerateResult
 * @property {Blob} png with the A1111 parameters text and the AI-generated label
 * @property {number} width
 * @property {number} height
 * @property {number} seed
 * @property {string} scheduler
 * @property {string} parameters
 * @property {Timings} timings
 * @property {'txt2img' | 'img2img' | 'inpaint'} mode
 * @property {number | null} strength
 *
 * @typedef {object} Generator
 * @property {GeneratorInfo} info
 * @property {(options?: GenerateOptions) => Promise<GenerateResult>} generate
 * @property {() => void} simulateDeviceLoss
 * @property {() => void} dispose
 */

/**
 * Loads a model in a new worker. Options: model (base URL), onProgress(event),
 * precision ('auto' | 'f32' | 'f16'), quantize ('q8_0' | 'q4_0': layer weights quantised as they
 * load and kept quantised on the GPU; see WEIGHT_FORMATS), kernels ('sdweb' | 'burn'), revision (cache key; default from the URL or 'main'),
 * taesd (base URL of a TAESD repository, e.g. madebyollin/taesd: image-sized step previews),
 * portable (true: run as on an adapter with neither `subgroups` nor `shader-f16`, f32 everywhere,
 * which is what Safari and Firefox offer; sdweb's kernels need neither).
 */
/**
 * @param {GeneratorOptions} options
 * @returns {Promise<Generator>}
 */
export async function createGenerator({ model, onProgress = () => {}, precision = 'auto', quantize, kernels, revision, taesd, portable = false, loras = [] } = /** @type {GeneratorOptions} */ ({})) {
  if (!model) throw new Error('createGenerator: `model` (the base URL of a diffusers repository) is required');
  const gpu = await checkWebGPU();
  if (!gpu.ok) throw new Error(gpu.reason);
  const base = new URL(String(model).replace(/\/+$/, ''), globalThis.document?.baseURI ?? globalThis.location?.href).href;
  // Ask once that the browser keep our weights under storage pressure (window-only API).
  globalThis.navigator?.storage?.persist?.().catch(() => {});

  const taesdUrl = taesd ? new URL(String(taesd).replace(/\/+$/, ''), globalThis.document?.baseURI ?? globalThis.location?.href).href : undefined;
  const loadRequest = { op: 'load', model: base, revision: revision ?? revisionOf(base), precision, quantize, kernels, taesd: taesdUrl, portable, loras: loraRequests(loras) };
  let session = await openSession(loadRequest, onProgress);
  const info = { ...session.info, model: base, schedulers: SCHEDULERS };
  let busy = false;
  let disposed = false;

  return {
    info,
    /** @param {GenerateOptions} [options] */
    async generate({ prompt = '', negativePrompt = '', steps = info.steps, guidance = info.guidance, scheduler,
      width, height, seed, signal, initImage, strength, mask, previewEvery, promptSyntax, onProgress: perCall } = {}) {
      if (disposed) throw new Error('the generator was disposed');
      if (busy) throw new Error('a generation is already running on this generator; wait for it (or abort it) first');
      if (signal?.aborted) throw Object.assign(new Error('generation cancelled'), { name: 'AbortError' });
      busy = true;
      try {
        return await run({ prompt, negativePrompt, steps, guidance, scheduler, width, height, seed, signal, initImage, strength, mask, previewEvery, promptSyntax, perCall });
      } finally {
        busy = false;
      }
    },
    /** Destroys the worker's GPU device, as a driver reset or a lost GPU would (for tests). */
    simulateDeviceLoss() {
      session.worker.postMessage({ op: 'lose-device' });
    },
    dispose() {
      disposed = true;
      session.close(new Error('the generator was disposed'));
    },
  };

  /** @param {GenerateOptions & { perCall?: (event: ProgressEvent) => void }} options @returns {Promise<GenerateResult>} */
  async function run({ prompt, negativePrompt, steps, guidance, scheduler, width, height, seed, signal, initImage, strength, mask, previewEvery, promptSyntax, perCall }) {
    const progress = perCall ?? onProgress;
    // A lost device or a crashed worker: start a new one, which reloads from the cache.
    if (session.failure) {
      progress({ type: 'restart', reason: session.failure.message });
      session = await openSession(loadRequest, onProgress);
    }
    seed ??= Math.floor(Math.random() * 2 ** 32);
    // img2img: any image source (Blob, <img>, canvas, ImageData, ImageBitmap); its own size,
    // rounded down to the size multiple, unless width/height are given.
    // The pixels as stored (no colour management, no premultiplication), as the CLI reads a PNG.
    /** @type {ImageBitmapOptions} */
    const exact = { colorSpaceConversion: 'none', premultiplyAlpha: 'none' };
    const bitmap = initImage ? await createImageBitmap(initImage, exact) : undefined;
    const fit = (v) => Math.max(1, Math.floor(v / info.sizeMultiple)) * info.sizeMultiple;
    width ??= bitmap ? fit(bitmap.width) : info.width;
    height ??= bitmap ? fit(bitmap.height) : info.height;
    const request = { prompt, negativePrompt, steps: Number(steps), guidance: Number(guidance), width: Number(width), height: Number(height), seed: Number(seed) };
    if (scheduler) request.scheduler = scheduler;
    if (promptSyntax) request.promptSyntax = promptSyntax;
    if (mask && !bitmap) throw new Error('a mask needs an initImage to inpaint');
    // Inpainting: white = repaint. Both go over at their own size; the wasm core resizes them
    // with the CLI's code, so one input gives one image on both.
    const maskBitmap = mask ? await createImageBitmap(mask, exact) : undefined;
    if (strength !== undefined) request.strength = Number(strength);
    if (previewEvery !== undefined) request.previewEvery = Number(previewEvery); // default 1; 0: none
    const { worker, call } = session;
    const abort = () => worker.postMessage({ op: 'cancel' });
    signal?.addEventListener('abort', abort, { once: true });
    try {
      const out = await call({ op: 'generate', request, initImage: bitmap, mask: maskBitmap }, progress,
        [bitmap, maskBitmap].filter(Boolean));
      return { ...out, png: new Blob([out.png], { type: 'image/png' }) };
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }
}

/**
 * A worker with the model loaded: `call(message)` sends a request and resolves with its result;
 * `failure` is set (and every waiting call rejected) once the worker crashes or its GPU device
 * is lost, after which the session is useless and the generator opens a new one.
 */
async function openSession(loadRequest, onProgress) {
  const worker = startWorker();
  let nextId = 1;
  const pending = new Map();
  const session = { worker, failure: null, info: null };
  const fail = (error) => {
    if (session.failure) return;
    session.failure = error;
    for (const waiting of pending.values()) waiting.reject(error);
    pending.clear();
    worker.terminate();
  };
  worker.onmessage = ({ data }) => {
    if (data.type === 'lost') {
      fail(new Error(`The GPU stopped working for this page (${data.message}); the next generation starts it again.`));
      return;
    }
    const waiting = pending.get(data.id);
    if (!waiting) return;
    if (data.type === 'progress') {
      const event = data.event;
      if (event.type === 'preview' && event.pixels) {
        // A drawable image (drawImage accepts it) made synchronously, so events stay in order.
        const canvas = new OffscreenCanvas(event.width, event.height);
        canvas.getContext('2d').putImageData(new ImageData(event.pixels, event.width, event.height), 0, 0);
        event.bitmap = canvas;
      }
      try { waiting.onProgress(event); } catch (e) { console.error('onProgress threw', e); }
    } else {
      pending.delete(data.id);
      if (data.type === 'result') waiting.resolve(data.value);
      else waiting.reject(toError(data.error));
    }
  };
  // A crashed worker (e.g. a wasm trap) fails every waiting call with its message.
  worker.onerror = (event) => {
    event.preventDefault();
    fail(new Error(`The generator stopped (${event.message || 'worker error'}); the next generation starts it again.`));
  };
  session.call = (message, progress = onProgress, transfer = []) => new Promise((resolve, reject) => {
    if (session.failure) { reject(session.failure); return; }
    const id = nextId++;
    pending.set(id, { resolve, reject, onProgress: progress });
    worker.postMessage({ id, ...message }, transfer);
  });
  session.close = (reason) => {
    for (const waiting of pending.values()) waiting.reject(reason);
    pending.clear();
    session.failure = reason;
    worker.postMessage({ id: 0, op: 'dispose' });
    // Terminating the worker releases its GPU device and everything on it.
    setTimeout(() => worker.terminate(), 100);
  };
  try {
    session.info = await session.call(loadRequest);
  } catch (e) {
    worker.terminate();
    throw e;
  }
  return session;
}

// The Web Worker that runs the wasm core, so the page stays responsive while the GPU works.
// It fetches a diffusers repository through the IndexedDB cache (cache.js) and streams each
// weights file, chunk by chunk, into GPU buffers: no file is ever whole in memory.
//
// Protocol (see sdweb.js): requests {id, op, ...}; replies {id, type: 'progress'|'result'|'error'};
// {type: 'lost', message} when the GPU device is gone.

import init, { ModelLoader, WeightsQuantizer, checkModelIndex, modelLayout } from './pkg/sdweb.js';
import { ModelCache, formatBytes } from './cache.js';

// sdweb's own kernels need neither the `subgroups` nor the `shader-f16` feature. A portable
// load (createGenerator({ portable: true })) hides both from the adapter, so wgpu and CubeCL
// see what Safari and Firefox offer: no subgroups, f32 everywhere.
let hiddenFeatures = new Set();
if (self.GPUAdapter) {
  const features = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'features').get;
  Object.defineProperty(GPUAdapter.prototype, 'features', {
    configurable: true,
    get() {
      const all = features.call(this);
      return hiddenFeatures.size ? new Set([...all].filter((f) => !hiddenFeatures.has(f))) : all;
    },
  });
  // CubeCL's own ops that read the subgroup size builtins (burn's matmul) declare
  // `enable subgroups;`, which wgpu 30 never requests from the browser (its feature table lacks
  // it): request it when the adapter offers it and it is not hidden.
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor = {}) {
    const features = new Set(descriptor.requiredFeatures ?? []);
    if (this.features.has('subgroups')) features.add('subgroups');
    return requestDevice.call(this, { ...descriptor, requiredFeatures: [...features] }).then(watchDevice);
  };
}

// A lost device (driver reset, GPU process crash, another tab's OOM) or an error nothing
// captured leaves the wasm core with dead GPU state: tell the page, which drops this worker
// and starts a new one for the next generation (sdweb.js).
let device = null;
let disposing = false;
function watchDevice(d) {
  device = d;
  d.lost.then((lost) => {
    if (!disposing) self.postMessage({ type: 'lost', message: `device lost: ${lost.message || lost.reason || 'unknown reason'}` });
  });
  d.addEventListener('uncapturederror', (event) => {
    console.error('uncaptured WebGPU error', event.error);
    self.postMessage({ type: 'lost', message: `GPU error: ${event.error?.message ?? event.error}` });
  });
  return d;
}

// wgpu does not surface WGSL compile errors; log them (with the failing line) so a shader
// that a browser's compiler rejects is diagnosable from the console.
if (self.GPUDevice) {
  const create = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    // Tint's uniformity analysis rejects CubeCL's plane reductions, which are uniform in
    // practice (naga, natively, does not check); turn that diagnostic off for such shaders.
    if (/^enable subgroups;/m.test(descriptor.code) && !/diagnostic\(off, subgroup_uniformity\)/.test(descriptor.code)) {
      descriptor = { ...descriptor, code: descriptor.code.replace(/^(enable subgroups;)/m, '$1\ndiagnostic(off, subgroup_uniformity);') };
    }
    const module = create.call(this, descriptor);
    module.getCompilationInfo?.().then((info) => {
      for (const m of info.messages.filter((m) => m.type === 'error')) {
        const line = descriptor.code.split('\n')[m.lineNum - 1] ?? '';
        console.error(`WGSL error in ${descriptor.label ?? 'shader'} at ${m.lineNum}:${m.linePos}: ${m.message}\n  ${line.trim()}`);
      }
    }).catch(() => {});
    return module;
  };
}

const wasmReady = init({ module_or_path: new URL('./pkg/sdweb_bg.wasm', import.meta.url) });
let generator = null;
let info = null;


self.onmessage = async ({ data }) => {
  const { id, op } = data;
  if (op === 'cancel') {
    generator?.cancel();
    return;
  }
  if (op === 'lose-device') {
    device?.destroy();
    return;
  }
  const progress = (event) => self.postMessage({ id, type: 'progress', event });
  try {
    await wasmReady;
    if (op === 'load') {
      self.postMessage({ id, type: 'result', value: await load(data, progress) });
    } else if (op === 'generate') {
      const value = await generate({ ...data.request, initImage: data.initImage, mask: data.mask }, progress);
      self.postMessage({ id, type: 'result', value }, [value.png.buffer]);
    } else if (op === 'dispose') {
      disposing = true;
      generator?.free();
      generator = null;
      self.postMessage({ id, type: 'result', value: null });
    } else {
      throw new Error(`unknown worker operation ${op}`);
    }
  } catch (e) {
    self.postMessage({ id, type: 'error', error: describe(e) });
  }
};

// Errors cross postMessage as plain objects; keep what the page needs to explain them. The
// wasm core's errors carry a `code` naming their kind (crate/src/wasm.rs, CodedError) and are
// AbortErrors when cancelled; cache errors carry theirs (cache.js, CacheError).
function describe(e) {
  return { name: e?.name ?? 'Error', message: String(e?.message ?? e), code: e?.code, url: e?.url, status: e?.status, needed: e?.needed, available: e?.available };
}

// Writes the quantised copy of a cached weights file, then drops the original.
async function quantizeCached(cache, component, quantize, sourceUrl, target, entry, source, progress) {
  const quantizer = new WeightsQuantizer(component, quantize, source.path, source.size);
  let done = 0;
  async function* converted() {
    try {
      for await (const chunk of cache.chunks(sourceUrl, entry.revision)) {
        const out = quantizer.push(chunk);
        done += chunk.length;
        progress({ type: 'quantize', file: source.path, loaded: done, total: source.size });
        if (out.length) yield out;
      }
      const tail = quantizer.finish();
      if (tail.length) yield tail;
    } finally {
      quantizer.free();
    }
  }
  const stored = await cache.storeDerived(target.url, entry, converted());
  await cache.remove(sourceUrl, entry.revision);
  return { path: target.path, size: stored.size };
}

// One repository (a diffusers model folder, or TAESD's) through the cache: `pick` resolves
// which of several candidate files exists (cached first, else by a HEAD request), `fetch`
// downloads a picked file.
function repository(cache, root, revision, progress, label = '') {
  const base = root.replace(/\/+$/, '');
  const url = (path) => `${base}/${path}`;
  return {
    base, url,
    // -> { path, size, cached } for the first candidate that exists, or null (optional ones
    // only: absent, or unreachable while offline).
    async pick(candidates, { optional = false } = {}) {
      for (const path of candidates) {
        const cached = await cache.info(url(path), revision);
        if (cached) return { path, size: cached.size, cached: true };
      }
      for (const path of candidates) {
        try {
          const remote = await cache.probe(url(path), { model: base });
          if (remote.exists) return { path, size: remote.size, cached: false };
        } catch (e) {
          if (optional && e.code === 'network') return null;
          throw e;
        }
      }
      if (optional) return null;
      throw Object.assign(new Error(`${base}/${candidates.join(' or ')} does not exist (HTTP 404)`), { code: 'http', status: 404, url: url(candidates[0]) });
    },
    async fetch(file) {
      if (!file || file.cached) return;
      await cache.ensure(url(file.path), {
        model: base, revision,
        onProgress: (loaded, total) => progress({ type: 'download', file: label + file.path, loaded, total }),
      });
    },
    text: (path) => cache.text(url(path), revision),
    cached: (path) => cache.info(url(path), revision),
  };
}

// Every file a load needs, resolved before any byte is downloaded. Weights: the fp16 variant
// when published (half the download; converted on upload), else f32; with `quantize`, a
// quantised copy cached under a derived name (made once, chunk by chunk, then the original is
// dropped), which later loads read instead.
// One tokenizer folder: tokenizer.json (fast layout) or vocab.json + merges.txt (original SD
// layout), plus its optional settings files -> { file role: path }.
async function planTokenizer(repo, { json, vocab: [vocabPath, mergesPath], optional: [configPath, specialTokensPath] }, add) {
  const slow = async (optional) => {
    const vocab = await repo.pick([vocabPath], { optional });
    const merges = vocab && (await repo.pick([mergesPath], { optional }));
    return vocab && merges ? { vocabJson: vocab, mergesTxt: merges } : null;
  };
  const cachedSlow = await slow(true).then((files) => (files?.vocabJson.cached && files.mergesTxt.cached ? files : null));
  const fast = cachedSlow ? null : await repo.pick([json], { optional: true });
  const tokenizer = cachedSlow ?? (fast ? { tokenizerJson: fast } : await slow(false));
  tokenizer.tokenizerConfigJson = await repo.pick([configPath], { optional: true });
  tokenizer.specialTokensMapJson = await repo.pick([specialTokensPath], { optional: true });
  const paths = {};
  for (const [key, file] of Object.entries(tokenizer)) if (add(file)) paths[key] = file.path;
  return paths;
}

async function planLoad(repo, taesdRepo, quantize) {
  const layout = modelLayout(quantize ?? undefined); // crate/src/layout.rs: what a diffusers folder holds
  const plan = { files: [], tokenizers: {}, weights: {}, preview: null, layout };
  const add = (file, extra = {}) => {
    if (file) plan.files.push({ repo, ...file, ...extra });
    return file;
  };
  add(await repo.pick([layout.modelIndex]));
  // SDXL folders have a second text encoder and tokenizer (model_index.json says so too, but
  // it is not read before the plan is complete: nothing is downloaded before the quota check).
  const xl = Boolean(await repo.pick([layout.xlMarker], { optional: true }));
  for (const tokenizer of layout.tokenizers.filter((t) => xl || !t.xl)) {
    plan.tokenizers[tokenizer.folder] = await planTokenizer(repo, tokenizer, add);
  }
  for (const { name: component, config, weights, quantizedCopy } of layout.components.filter((c) => xl || !c.xl)) {
    add(await repo.pick([config]));
    // Made here, never on a server: only the cache can have it.
    const derived = quantizedCopy && (await repo.cached(quantizedCopy));
    if (derived) {
      plan.weights[component] = { path: quantizedCopy, size: derived.size, config };
      continue;
    }
    const source = await repo.pick(weights, { optional: true });
    if (!source) throw new Error(`${repo.base}/${component}/ has no weights: looked for ${weights.map((c) => c.split('/').pop()).join(' and ')}`);
    add(source, { quantizeTo: quantizedCopy, component });
    plan.weights[component] = { path: quantizedCopy ?? source.path, size: source.size, config };
  }
  add(await repo.pick([layout.schedulerConfig]));
  if (taesdRepo) {
    plan.preview = {
      config: add(await taesdRepo.pick([layout.previewConfig]), { repo: taesdRepo }),
      weights: add(await taesdRepo.pick([layout.previewWeights]), { repo: taesdRepo }),
    };
  }
  return plan;
}

// The storage the plan's downloads need at their peak: each file as it arrives, plus, while a
// quantised copy is written, room for it next to its original (a copy is never larger than its
// source: q8_0 stores 8.5 bits per weight, q4_0 4.5, against f16's 16).
function peakStorage(plan) {
  let stored = 0;
  let peak = 0;
  for (const file of plan.files) {
    if (!file.cached) stored += file.size ?? 0;
    peak = Math.max(peak, stored + (file.quantizeTo ? (file.size ?? 0) : 0));
  }
  return peak;
}

async function checkSpaceFor(cache, plan, name, quantize) {
  const downloads = plan.files.filter((f) => !f.cached);
  if (!downloads.length && !plan.files.some((f) => f.quantizeTo)) return;
  const bytes = downloads.reduce((n, f) => n + (f.size ?? 0), 0);
  const unknown = downloads.filter((f) => f.size == null).length;
  let detail = `${downloads.length} files to download, ${formatBytes(bytes)}${unknown ? ` (${unknown} of unannounced size not counted)` : ''}`;
  if (downloads.some((f) => f.quantizeTo)) detail += `, and room for each ${quantize} copy while it is made next to its original`;
  await cache.checkSpace(peakStorage(plan), name, detail);
}

// The cache's model name for LoRA files fetched by URL (they belong to no one model).
const LORA_CACHE_MODEL = 'sdweb-loras';

// Each LoRA's bytes into the loader (merged into the weights as they stream in): a URL through
// the cache (downloaded once), a file (dropped on the page) as given.
async function addLoras(loader, cache, loras, progress) {
  for (const { url, file, weight, name } of loras ?? []) {
    let bytes;
    if (url) {
      await cache.ensure(url, { model: LORA_CACHE_MODEL, onProgress: (loaded, total) => progress({ type: 'download', file: name, loaded, total }) });
      bytes = await cache.bytes(url);
    } else {
      bytes = new Uint8Array(await file.arrayBuffer());
    }
    loader.addLora(bytes, name, weight);
  }
}

async function load({ model, revision, precision, quantize, kernels, taesd, portable, loras }, progress) {
  if (generator) { generator.free(); generator = null; }
  hiddenFeatures = new Set(portable ? ['subgroups', 'shader-f16'] : []);
  const cache = await ModelCache.open();
  const repo = repository(cache, model, revision, progress);
  const base = repo.base;
  const url = repo.url;
  const taesdRepo = taesd ? repository(cache, taesd, revision, progress, 'taesd/') : null;

  // Cached files are used without any request, so a second visit works offline.
  const plan = await planLoad(repo, taesdRepo, quantize);
  await checkSpaceFor(cache, plan, base.split('/').filter(Boolean).pop() ?? base, quantize);
  await wasmReady;
  await repo.fetch(plan.files[0]);
  const modelIndex = await repo.text(plan.layout.modelIndex);
  checkModelIndex(modelIndex, `${base}/${plan.layout.modelIndex}`);

  for (const file of plan.files.slice(1)) {
    await file.repo.fetch(file);
    file.size = (await cache.info(file.repo.url(file.path), revision)).size; // a HEAD may not have announced it
    if (file.component) plan.weights[file.component].size = file.size;
    if (file.quantizeTo) {
      const stored = await quantizeCached(cache, file.component, quantize, url(file.path), { path: file.quantizeTo, url: url(file.quantizeTo) }, { model: base, revision }, file, progress);
      plan.weights[file.component] = { ...plan.weights[file.component], ...stored };
    }
  }
  const weights = plan.weights;

  // Optional TAESD (a separate repository) for image-sized previews after each step.
  let preview = null;
  if (taesdRepo) {
    const { config, weights } = plan.preview;
    preview = { config: await taesdRepo.text(config.path), url: taesdRepo.url(weights.path), size: (await cache.info(taesdRepo.url(weights.path), revision)).size };
  }

  const loader = await ModelLoader.create(base.split('/').filter(Boolean).pop() ?? base, { precision, quantize, kernels });
  try {
    await addLoras(loader, cache, loras, progress);
    const bytes = async (path) => (path ? cache.bytes(url(path), revision) : undefined);
    loader.setModelIndex(modelIndex, `${base}/${plan.layout.modelIndex}`);
    for (const [folder, files] of Object.entries(plan.tokenizers)) {
      loader.setTokenizer(folder,
        await bytes(files.tokenizerJson), await bytes(files.vocabJson), await bytes(files.mergesTxt),
        await bytes(files.tokenizerConfigJson), await bytes(files.specialTokensMapJson));
    }
    loader.setSchedulerConfig(await cache.text(url(plan.layout.schedulerConfig), revision));
    let fileIndex = 0;
    const components = Object.keys(weights);
    for (const component of components) {
      const { path, size, config } = weights[component];
      progress({ type: 'load', file: path, index: fileIndex++, count: components.length, loaded: 0, total: size });
      loader.beginWeights(component, await cache.text(url(config), revision), path, size);
      let loaded = 0;
      try {
        for await (const chunk of cache.chunks(url(path), revision)) {
          loader.pushWeights(chunk);
          loaded += chunk.length;
        }
        loader.endWeights();
      } catch (e) {
        // A file that parses wrong is not kept: the next load downloads it again.
        if (e?.code === 'malformed-weights') {
          await cache.remove(url(path), revision);
          throw Object.assign(new Error(`${e.message} — the file was removed from the cache; loading again downloads it anew`), { code: e.code });
        }
        throw e;
      }
    }
    if (preview) {
      const file = `taesd/${plan.layout.previewWeights}`;
      progress({ type: 'load', file, index: fileIndex, count: components.length + 1, loaded: 0, total: preview.size });
      loader.beginWeights('taesd', preview.config, file, preview.size);
      for await (const chunk of cache.chunks(preview.url, revision)) loader.pushWeights(chunk);
      loader.endWeights();
    }
    generator = loader.build();
  } finally {
    loader.free();
  }
  cache.close();
  info = { model, ...generator.info(), adapterFeatures: await adapterFeatures() };
  return info;
}

// The adapter features wgpu saw (after hiding, see `hiddenFeatures`), for gen.info.
async function adapterFeatures() {
  const adapter = await navigator.gpu?.requestAdapter();
  return adapter ? [...adapter.features].sort() : [];
}

// img2img / inpainting: an ImageBitmap from the page as RGBA8 at its own size (the wasm core
// resizes it to the generation size, with the code the CLI uses).
function pixelsOf(bitmap) {
  if (!bitmap) return {};
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { pixels: new Uint8Array(ctx.getImageData(0, 0, width, height).data.buffer), size: [width, height] };
}

async function generate({ initImage, mask, ...request }, progress) {
  if (!generator) throw new Error('no model is loaded');
  const onEvent = (event, pixels) => {
    if (event.type === 'compiling') {
      progress({ type: 'compile' });
    } else if (event.type === 'compiled') {
      progress(event);
    } else if (event.type === 'preview') {
      progress({ ...event, pixels: new Uint8ClampedArray(pixels.buffer, pixels.byteOffset, pixels.byteLength) });
      if (event.step === event.steps) progress({ type: 'decode' });
    } else if (event.type === 'step') {
      progress(event);
    } else if (event.type === 'tokenized' && event.truncated) {
      progress({ type: 'warning', message: `The prompt has ${event.tokens} tokens and was cut to ${event.maxTokens} (CLIP's limit).` });
    }
  };
  const init = pixelsOf(initImage);
  const maskPixels = pixelsOf(mask);
  const out = await generator.generate({ ...request, initImageSize: init.size, maskSize: maskPixels.size },
    init.pixels, maskPixels.pixels, onEvent);
  progress({ type: 'done' });
  return out;
}

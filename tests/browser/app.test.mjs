// The browser app end to end: Debian Chromium, WebGPU on SwiftShader, the page served by
// tools/server.mjs with the bundled demo model (tests/fixtures/sd1_tiny).
//
// SwiftShader compiles each page's shaders anew (~3 min for the tiny model), so the tests share
// pages and generate in as few page loads as possible; the order of the tests matters.
// Run: cd tests/browser && npm ci && node --test app.test.mjs   (needs www/pkg: www/build-wasm.sh dev)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../tools/server.mjs';
import { launch, logConsole } from './harness.mjs';
import { a1111Parameters, pngTextChunks } from './png-text.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = path.join(ROOT, 'tests/fixtures/sd1_tiny');
// Screenshots of each run; README's copies in docs/screenshots come from SDWEB_SCREENSHOTS=docs/screenshots.
const SHOTS = path.resolve(ROOT, process.env.SDWEB_SCREENSHOTS ?? 'tests/out/screenshots');
const MINUTES = 60_000;

// What the page generates and the CLI reproduces: 32×32 is the demo model's native size.
const PARAMS = { prompt: 'a lighthouse on a cliff, oil painting', negativePrompt: 'blurry', steps: 2, guidance: 7.5, scheduler: 'euler', width: 32, height: 32, seed: 1234 };

const scratch = mkdtempSync(path.join(tmpdir(), 'sdweb-app-test-'));
let server, browser, context, page, thirdParty;

// A copy of the demo model with one weights file damaged, served under /bad/<name>/.
function damagedModel(name, damage) {
  const dir = path.join(scratch, name);
  cpSync(FIXTURE, dir, { recursive: true, dereference: true });
  damage(dir);
  return dir;
}

before(async () => {
  assert.ok(existsSync(path.join(ROOT, 'www/pkg/sdweb_bg.wasm')), 'www/pkg is missing: run www/build-wasm.sh dev first');
  const truncated = damagedModel('truncated', (dir) => {
    const file = path.join(dir, 'vae/diffusion_pytorch_model.safetensors');
    truncateSync(file, Math.floor(readFileSync(file).length / 2));
  });
  server = await startServer({ port: 0, testHooks: true, mounts: { '/bad/truncated': truncated, '/taesd': path.join(ROOT, 'tests/fixtures/taesd_tiny'), '/sdxl': path.join(ROOT, 'tests/fixtures/sdxl_tiny'), '/lora': path.join(ROOT, 'tests/fixtures/lora') } });
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  logConsole(page);
});

after(async () => {
  await browser?.close();
  server?.close();
  thirdParty?.close();
  rmSync(scratch, { recursive: true, force: true });
});

// A reference case list; the fixture script writes Python's JSON (-Infinity in some scheduler
// configs), which JSON.parse reads as the number it means.
const readCases = (dir) => JSON.parse(readFileSync(path.join(dir, 'cases.json'), 'utf8').replace(/-Infinity\b/g, '-1e999'));

const requests = async () => (await fetch(`${server.url}__requests`)).json();
const clearRequests = () => fetch(`${server.url}__requests/clear`, { method: 'POST' });

// Pixel difference of two PNGs (base64), decoded by the browser itself.
async function maxPixelDiff(pngA, pngB) {
  return page.evaluate(async ([a, b]) => {
    const pixels = async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return { w: bitmap.width, h: bitmap.height, data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data };
    };
    const [x, y] = [await pixels(a), await pixels(b)];
    if (x.w !== y.w || x.h !== y.h) return { sizeMismatch: [x.w, x.h, y.w, y.h] };
    let max = 0, sum = 0;
    for (let i = 0; i < x.data.length; i++) {
      if (i % 4 === 3) continue;
      const d = Math.abs(x.data[i] - y.data[i]);
      max = Math.max(max, d);
      sum += d;
    }
    return { max, mean: sum / (x.data.length * 0.75) };
  }, [pngA, pngB]);
}

let browserPng; // base64 of the page's first image

// The native CLI (built by `cargo test`, or built here when run on its own).
function sdwebBin() {
  const bin = process.env.SDWEB_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug/sdweb');
  if (!existsSync(bin)) execFileSync('cargo', ['build', '-p', 'sdweb', '--bin', 'sdweb'], { cwd: ROOT, stdio: 'inherit' });
  return bin;
}

// The page runs `?portable`: the worker hides `subgroups` and `shader-f16` from the adapter, as
// Safari and Firefox offer neither, so this is the f32, subgroup-free path.
test('the page generates with the bundled model on an adapter without subgroups or shader-f16; the image matches the native CLI and carries its parameters', { timeout: 15 * MINUTES }, async () => {
  await page.goto(`${server.url}?portable`);
  await page.evaluate(() => window.sdwebApp.ready);
  mkdirSync(SHOTS, { recursive: true });
  await page.fill('#prompt', PARAMS.prompt);
  await page.fill('#negative', PARAMS.negativePrompt);
  await page.fill('#steps', String(PARAMS.steps));
  await page.fill('#guidance', String(PARAMS.guidance));
  await page.selectOption('#scheduler', PARAMS.scheduler);
  await page.fill('#width', String(PARAMS.width));
  await page.fill('#height', String(PARAMS.height));
  await page.uncheck('#random-seed');
  await page.fill('#seed', String(PARAMS.seed));
  await page.screenshot({ path: path.join(SHOTS, 'page-before.png'), fullPage: true });
  await page.click('#generate');
  await page.waitForFunction(() => window.sdwebApp.lastResult, null, { timeout: 12 * MINUTES, polling: 1000 });
  await page.screenshot({ path: path.join(SHOTS, 'page-after.png'), fullPage: true });
  browserPng = await page.evaluate(async () => {
    const bytes = new Uint8Array(await window.sdwebApp.lastResult.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  });

  const nativePath = path.join(scratch, 'native.png');
  execFileSync(sdwebBin(), ['generate', '--model', FIXTURE, '--prompt', PARAMS.prompt, '--negative-prompt', PARAMS.negativePrompt,
    '--steps', String(PARAMS.steps), '--guidance', String(PARAMS.guidance), '--scheduler', PARAMS.scheduler,
    '--width', String(PARAMS.width), '--height', String(PARAMS.height), '--seed', String(PARAMS.seed),
    '--precision', 'f32', '--output', nativePath], { stdio: 'inherit' });
  const diff = await maxPixelDiff(browserPng, readFileSync(nativePath).toString('base64'));
  console.log(`browser vs native sdweb generate: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3, `browser image differs from the CLI's by up to ${diff.max}/255 (limit 3): ${JSON.stringify(diff)}`);

  const chunks = pngTextChunks(Buffer.from(browserPng, 'base64'));
  const params = a1111Parameters(chunks.parameters);
  assert.deepEqual(params, {
    prompt: PARAMS.prompt, negativePrompt: PARAMS.negativePrompt, Steps: '2', Sampler: 'Euler', 'CFG scale': '7.5',
    Seed: String(PARAMS.seed), Size: '32x32', Model: 'demo',
  });
  assert.match(chunks['XML:com.adobe.xmp'], /Iptc4xmpExt:DigitalSourceType[^]*trainedAlgorithmicMedia/);

  const info = await page.evaluate(() => window.sdwebApp.generator.info);
  console.log(`adapter features the generator saw: ${info.adapterFeatures.join(', ')}; f16 compute: ${info.f16}`);
  assert.ok(!info.adapterFeatures.includes('subgroups') && !info.adapterFeatures.includes('shader-f16'), JSON.stringify(info.adapterFeatures));
  assert.equal(info.f16, false);
});

// LoRAs through the JS API: one by URL (cached like weights), one as a file (as dropped on the
// page), merged at load; a prompt tag names one of them. The CLI with the same two --lora files
// and the same prompt gives the same image, and both record them as A1111 does.
test('LoRAs given to createGenerator (a URL and a file) give the CLI --lora image and record Lora hashes', { timeout: 10 * MINUTES }, async () => {
  const lora = { ...PARAMS, prompt: `${PARAMS.prompt} <lora:sd1_peft:0.6>` };
  const peft = readFileSync(path.join(ROOT, 'tests/fixtures/lora/sd1_peft.safetensors')).toString('base64');
  // Any document of the server will do (after the first test, the app page).
  if (!page.url().startsWith(server.url)) await page.goto(`${server.url}manifest.webmanifest`);
  const { png, parameters } = await page.evaluate(async ([params, peftBase64]) => {
    const { createGenerator } = await import('/sdweb.js');
    const file = new File([Uint8Array.from(atob(peftBase64), (c) => c.charCodeAt(0))], 'sd1_peft.safetensors');
    const gen = await createGenerator({
      model: '/models/demo', portable: true,
      loras: [{ url: '/lora/sd1_kohya_locon.safetensors', weight: 0.8 }, { file, weight: 0.6 }],
    });
    try {
      const out = await gen.generate(params);
      const bytes = new Uint8Array(await out.png.arrayBuffer());
      let s = '';
      for (const b of bytes) s += String.fromCharCode(b);
      return { png: btoa(s), parameters: out.parameters };
    } finally {
      gen.dispose();
    }
  }, [lora, peft]);
  const nativePath = path.join(scratch, 'native-lora.png');
  const fixtureLora = (name) => path.join(ROOT, 'tests/fixtures/lora', name);
  execFileSync(sdwebBin(), ['generate', '--model', FIXTURE, '--prompt', lora.prompt, '--negative-prompt', lora.negativePrompt,
    '--steps', String(lora.steps), '--guidance', String(lora.guidance), '--scheduler', lora.scheduler,
    '--width', String(lora.width), '--height', String(lora.height), '--seed', String(lora.seed), '--precision', 'f32',
    '--lora', `${fixtureLora('sd1_kohya_locon.safetensors')}:0.8`, '--lora', fixtureLora('sd1_peft.safetensors'),
    '--output', nativePath], { stdio: 'inherit' });
  const native = readFileSync(nativePath);
  const diff = await maxPixelDiff(png, native.toString('base64'));
  console.log(`LoRA browser vs native sdweb generate --lora: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3, `the browser's LoRA image differs from the CLI's by up to ${diff.max}/255 (limit 3): ${JSON.stringify(diff)}`);
  // The page made the image of the same request without LoRAs (the tag is no text the encoder
  // reads): the LoRAs took effect.
  if (browserPng) assert.ok((await maxPixelDiff(png, browserPng)).max > 3, 'the LoRA image equals the image without LoRAs');
  const ours = a1111Parameters(parameters);
  assert.equal(ours['Lora hashes'], 'sd1_kohya_locon: 0806055fda62, sd1_peft: 630757e50d77');
  assert.equal(ours.prompt, `${lora.prompt} <lora:sd1_kohya_locon:0.8>`);
  const cli = a1111Parameters(pngTextChunks(native).parameters);
  assert.deepEqual([cli.prompt, cli['Lora hashes']], [ours.prompt, ours['Lora hashes']]);
});

test('progress events arrive in order; abort stops within one step and the generator stays usable', { timeout: 10 * MINUTES }, async () => {
  const result = await page.evaluate(async (params) => {
    const gen = window.sdwebApp.generator;
    const events = [];
    await gen.generate({ ...params, onProgress: (e) => events.push({ type: e.type, step: e.step, steps: e.steps }) });

    const controller = new AbortController();
    const seen = [];
    let abortError = null;
    try {
      await gen.generate({ ...params, steps: 12, signal: controller.signal, onProgress: (e) => {
        if (e.type === 'step') { seen.push(e.step); if (e.step === 2) controller.abort(); }
      } });
    } catch (e) { abortError = { name: e.name, message: e.message }; }

    const again = await gen.generate({ ...params, seed: params.seed + 1 });
    return { events, seen, abortError, againSize: again.png.size, againSeed: again.seed };
  }, PARAMS);
  const order = result.events.map((e) => (e.step ? `${e.type} ${e.step}/${e.steps}` : e.type));
  assert.deepEqual(order, ['step 1/2', 'preview 1/2', 'step 2/2', 'preview 2/2', 'decode', 'done']);
  assert.equal(result.abortError?.name, 'AbortError', JSON.stringify(result.abortError));
  assert.ok(Math.max(...result.seen) <= 3, `steps after abort at step 2: ${result.seen}`);
  assert.ok(result.againSize > 0);
  assert.equal(result.againSeed, PARAMS.seed + 1);
});

test('after a lost GPU device the next generation restarts the worker and gives the same image; calls never overlap', { timeout: 10 * MINUTES }, async () => {
  const result = await page.evaluate(async (params) => {
    const gen = window.sdwebApp.generator;
    const b64 = async (blob) => {
      let s = '';
      for (const byte of new Uint8Array(await blob.arrayBuffer())) s += String.fromCharCode(byte);
      return btoa(s);
    };
    const before = await gen.generate(params);
    // Two calls at once: the second is refused at once, the first unharmed.
    const first = gen.generate(params);
    let overlap = null;
    try { await gen.generate(params); } catch (e) { overlap = e.message; }
    await first;
    gen.simulateDeviceLoss(); // GPUDevice.destroy() in the worker
    await new Promise((resolve) => setTimeout(resolve, 500));
    const events = [];
    const after = await gen.generate({ ...params, onProgress: (e) => events.push(e.type === 'restart' ? `restart: ${e.reason}` : e.type) });
    return { before: await b64(before.png), after: await b64(after.png), overlap, events };
  }, PARAMS);
  assert.match(result.overlap ?? '', /already running/);
  assert.match(result.events[0] ?? '', /^restart: The GPU stopped working for this page \(device lost/, result.events.join(', '));
  assert.equal(result.events.at(-1), 'done');
  const diff = await maxPixelDiff(result.before, result.after);
  assert.equal(diff.max, 0, `after the restart: ${JSON.stringify(diff)}`);
});

test('img2img through the JS API matches diffusers; a preview arrives after every step', { timeout: 10 * MINUTES }, async () => {
  const dir = path.join(ROOT, 'tests/fixtures/reference/img2img');
  const c = readCases(dir).find((x) => x.name === 'img2img-sd1-ddim-s0.75');
  const result = await page.evaluate(async ({ c, initB64 }) => {
    const init = new Blob([Uint8Array.from(atob(initB64), (ch) => ch.charCodeAt(0))], { type: 'image/png' });
    const previews = [];
    const out = await window.sdwebApp.generator.generate({
      prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.steps, guidance: c.guidance, scheduler: c.scheduler,
      seed: c.seed, initImage: init, strength: c.strength,
      onProgress: (e) => {
        if (e.type !== 'preview') return;
        const px = e.bitmap.getContext('2d').getImageData(0, 0, e.width, e.height).data;
        previews.push({ step: e.step, steps: e.steps, width: e.width, height: e.height, px: Array.from(px) });
      },
    });
    const bytes = new Uint8Array(await out.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return { png: btoa(s), width: out.width, height: out.height, parameters: out.parameters, previews };
  }, { c, initB64: readFileSync(path.join(dir, c.init_image)).toString('base64') });

  assert.equal(`${result.width}x${result.height}`, `${c.width}x${c.height}`, 'size taken from the init image');
  assert.match(result.parameters, new RegExp(`Denoising strength: ${c.strength}`));
  const diff = await maxPixelDiff(result.png, readFileSync(path.join(dir, c.png)).toString('base64'));
  console.log(`browser img2img vs diffusers: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3 && diff.mean <= 0.5, JSON.stringify(diff));

  // diffusers runs int(steps * strength) steps: one preview after each, at latent resolution.
  const run = Math.floor(c.steps * c.strength);
  assert.deepEqual(result.previews.map((p) => `${p.step}/${p.steps}`), Array.from({ length: run }, (_, i) => `${i + 1}/${run}`));
  const last = result.previews.at(-1);
  const factor = c.width / last.width;
  assert.equal(last.height * factor, c.height);
  const finalPixels = await page.evaluate(async (b64) => {
    const bitmap = await createImageBitmap(new Blob([Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0))], { type: 'image/png' }));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    canvas.getContext('2d').drawImage(bitmap, 0, 0);
    return Array.from(canvas.getContext('2d').getImageData(0, 0, bitmap.width, bitmap.height).data);
  }, result.png);
  let se = 0, n = 0;
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < c.width; x++) {
      const p = ((Math.floor(y / factor) * last.width) + Math.floor(x / factor)) * 4;
      const q = (y * c.width + x) * 4;
      for (let k = 0; k < 3; k++) { se += (last.px[p + k] - finalPixels[q + k]) ** 2; n++; }
    }
  }
  const psnr = 10 * Math.log10(255 ** 2 / (se / n));
  // Reported, not enforced: the fixture's VAE has random weights, so the latent projection
  // (fitted to SD's real VAE) only loosely resembles its decode.
  console.log(`last latent preview vs final image: PSNR ${psnr.toFixed(2)} dB (${last.width}x${last.height} preview, nearest-upscaled)`);
  assert.ok(Number.isFinite(psnr));

  // An init image that must be resized (64x48 to the page's 32x32): the wasm core resizes it
  // with the CLI's code, so the browser and the CLI give the same image.
  const initPath = path.join(dir, c.init_image);
  const run2 = { prompt: 'a red mat', negativePrompt: '', steps: 2, guidance: 7.5, scheduler: 'euler', width: 32, height: 32, seed: 99, strength: 0.5 };
  const resizedPng = await page.evaluate(async ({ run2, initB64 }) => {
    const init = new Blob([Uint8Array.from(atob(initB64), (ch) => ch.charCodeAt(0))], { type: 'image/png' });
    const out = await window.sdwebApp.generator.generate({ ...run2, initImage: init });
    const bytes = new Uint8Array(await out.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }, { run2, initB64: readFileSync(initPath).toString('base64') });
  const nativeResized = path.join(scratch, 'native-img2img-resized.png');
  execFileSync(sdwebBin(), ['generate', '--model', FIXTURE, '--prompt', run2.prompt, '--steps', '2', '--guidance', '7.5',
    '--scheduler', 'euler', '--width', '32', '--height', '32', '--seed', '99', '--strength', '0.5', '--init-image', initPath,
    '--precision', 'f32', '--output', nativeResized], { stdio: 'inherit' });
  const resizedDiff = await maxPixelDiff(resizedPng, readFileSync(nativeResized).toString('base64'));
  console.log(`browser vs CLI img2img from a 64x48 image at 32x32: max ${resizedDiff.max}/255, mean ${resizedDiff.mean?.toFixed(4)}/255`);
  assert.ok(resizedDiff.max <= 3, JSON.stringify(resizedDiff));
});

test('inpainting through the JS API matches diffusers, and through the page with a painted mask', { timeout: 12 * MINUTES }, async () => {
  const dir = path.join(ROOT, 'tests/fixtures/reference/inpaint');
  const c = readCases(dir).find((x) => x.name === 'inpaint-sd1_tiny-ddim-s1.0');
  const b64 = (file) => readFileSync(path.join(dir, file)).toString('base64');
  const api = await page.evaluate(async ({ c, initB64, maskB64 }) => {
    const blob = (s) => new Blob([Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0))], { type: 'image/png' });
    const out = await window.sdwebApp.generator.generate({
      prompt: c.prompt, negativePrompt: c.negative_prompt, steps: c.steps, guidance: c.guidance, scheduler: c.scheduler,
      seed: c.seed, initImage: blob(initB64), mask: blob(maskB64),
    });
    const bytes = new Uint8Array(await out.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return { png: btoa(s), parameters: out.parameters };
  }, { c, initB64: b64(c.init_image), maskB64: b64(c.mask) });
  assert.match(api.parameters, /Denoising strength: 1/);
  const diff = await maxPixelDiff(api.png, b64(c.png));
  console.log(`browser inpainting vs diffusers: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3 && diff.mean <= 0.5, JSON.stringify(diff));

  // The page: pick the init image, paint a stroke on the mask canvas, generate.
  await page.fill('#prompt', 'a red bicycle');
  await page.fill('#steps', '2');
  await page.setInputFiles('#init-image', path.join(dir, c.init_image));
  await page.check('#mask-mode');
  const canvas = page.locator('#mask-canvas');
  await canvas.waitFor({ state: 'visible' });
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 10 });
  await page.mouse.up();
  // page.evaluate returns copies, so count gallery items to see the new result arrive.
  const before = await page.locator('#gallery li').count();
  await page.click('#generate');
  await page.waitForFunction((n) => document.querySelectorAll('#gallery li').length > n, before, { timeout: 8 * MINUTES, polling: 1000 });
  await page.screenshot({ path: path.join(SHOTS, 'page-inpaint.png'), fullPage: true });
  const ui = await page.evaluate(() => ({ parameters: window.sdwebApp.lastResult.parameters, badge: document.querySelector('#gallery li:first-child .badge')?.textContent }));
  assert.match(ui.parameters, /^a red bicycle\n[^]*Denoising strength: 1/);
  assert.equal(ui.badge?.trim(), 'inpaint');
  await page.click('#init-clear');
});

test('a second page load takes every weight from IndexedDB (and adds TAESD for previews)', { timeout: 5 * MINUTES }, async () => {
  await clearRequests();
  // ?taesd= makes the app load TAESD too (fetched now, cached for the offline test below).
  await page.goto(`${server.url}?taesd=/taesd`);
  await page.evaluate(() => window.sdwebApp.ready);
  const log = await requests();
  const weightRequests = log.filter((r) => r.path.startsWith('/models/') && r.path.endsWith('.safetensors'));
  assert.deepEqual(weightRequests, [], 'weights were requested again');
  assert.ok(log.some((r) => r.path === '/taesd/diffusion_pytorch_model.safetensors'), 'TAESD was not fetched');
  const cached = await page.evaluate(async () => (await import('/sdweb.js')).listCachedModels());
  const demo = cached.find((c) => c.model.endsWith('/models/demo'));
  assert.ok(demo && demo.bytes > 15e6, `demo model not listed in the cache: ${JSON.stringify(cached)}`);
});

test('a truncated weights file is rejected with a clear error and not kept', { timeout: 5 * MINUTES }, async () => {
  const outcome = await page.evaluate(async (base) => {
    const { createGenerator } = await import('/sdweb.js');
    const { ModelCache } = await import('/cache.js');
    let message = null;
    try { await createGenerator({ model: base }); } catch (e) { message = e.message; }
    const cache = await ModelCache.open();
    const kept = await cache.has(`${base}/vae/diffusion_pytorch_model.safetensors`);
    cache.close();
    return { message, kept };
  }, `${server.url}bad/truncated`);
  assert.match(outcome.message ?? '', /vae\/diffusion_pytorch_model\.safetensors/);
  assert.match(outcome.message, /truncated|ends at byte|exceeds the file size/);
  assert.equal(outcome.kept, false, 'the truncated file stayed in the cache');
});

test('a corrupted download (sha256 mismatch) is rejected and not kept', { timeout: 5 * MINUTES }, async () => {
  const file = '/models/demo/unet/diffusion_pytorch_model.safetensors';
  const outcome = await page.evaluate(async (url) => {
    const { ModelCache } = await import('/cache.js');
    const cache = await ModelCache.open();
    await cache.remove(url); // cached by the first test: force a fresh download
    await fetch(`/__fault?path=${encodeURIComponent(new URL(url).pathname)}&mode=corrupt`, { method: 'POST' });
    let error = null;
    try { await cache.ensure(url, { model: url.replace(/\/unet\/.*/, '') }); } catch (e) { error = { code: e.code, message: e.message }; }
    const kept = await cache.has(url);
    const again = await cache.ensure(url, { model: url.replace(/\/unet\/.*/, '') }); // the fault fired once
    cache.close();
    return { error, kept, againSize: again.size };
  }, `${server.url.replace(/\/$/, '')}${file}`);
  assert.equal(outcome.error?.code, 'integrity', JSON.stringify(outcome.error));
  assert.match(outcome.error.message, /unet\/diffusion_pytorch_model\.safetensors/);
  assert.equal(outcome.kept, false);
  assert.equal(outcome.againSize, readFileSync(path.join(FIXTURE, 'unet/diffusion_pytorch_model.safetensors')).length);
});

test('the weights picker shows download, cached and GPU sizes per format before a big model downloads', { timeout: 2 * MINUTES }, async () => {
  await page.selectOption('#model', 'sd15');
  const notes = {};
  for (const format of ['f16', 'q8_0', 'q4_0']) {
    await page.selectOption('#weights', format);
    notes[format] = await page.textContent('#weights-note');
  }
  for (const note of Object.values(notes)) assert.match(note, /Download 2\.1 GB[^]*GPU memory for the weights/);
  assert.notEqual(notes.f16, notes.q4_0);
  assert.equal(await page.isVisible('#load-model'), true, 'picking a big model must only show the load button');
  // SDXL-Turbo is offered with its measured sizes (q4_0: 3.1 GB of GPU memory, 2.6 GB cached).
  await page.selectOption('#model', 'sdxl-turbo');
  await page.selectOption('#weights', 'q4_0');
  assert.match(await page.textContent('#weights-note'), /Download 6\.9 GB[^]*GPU memory for the weights ≈ 3\.1 GB[^]*2\.6 GB/);
  assert.equal(await page.isVisible('#load-model'), true);
});

// One fresh worker costs ~4 min of SwiftShader shader compilation, so this test also covers q8_0
// weights: the reload picks q8_0, the worker quantises the cached originals in wasm (no network
// needed), and the image must match the native CLI's `--quantize q8_0`.
// SDXL through the same API with no new options: the worker finds text_encoder_2 and
// tokenizer_2, the wasm core conditions the UNet on both encoders and the added size ids.
test('an SDXL model (two text encoders, added conditions) generates through the JS API and matches the native CLI', { timeout: 15 * MINUTES }, async () => {
  const sdxl = { prompt: 'a watercolor fox in the snow', negativePrompt: 'blurry', steps: 3, guidance: 5, scheduler: 'euler', width: 64, height: 48, seed: 11 };
  // A context of its own (a fresh cache) and a page on the server's origin (any document there: the API is imported by URL).
  const apiContext = await browser.newContext();
  const apiPage = await apiContext.newPage();
  logConsole(apiPage);
  await apiPage.goto(`${server.url}manifest.webmanifest`);
  const png = await apiPage.evaluate(async ([model, params]) => {
    const { createGenerator } = await import('/sdweb.js');
    const gen = await createGenerator({ model, portable: true });
    try {
      const out = await gen.generate(params);
      const bytes = new Uint8Array(await out.png.arrayBuffer());
      let s = '';
      for (const b of bytes) s += String.fromCharCode(b);
      return btoa(s);
    } finally {
      gen.dispose();
    }
  }, [`${server.url}sdxl`, sdxl]);
  await apiContext.close();
  const nativePath = path.join(scratch, 'native-sdxl.png');
  execFileSync(sdwebBin(), ['generate', '--model', path.join(ROOT, 'tests/fixtures/sdxl_tiny'), '--prompt', sdxl.prompt,
    '--negative-prompt', sdxl.negativePrompt, '--steps', String(sdxl.steps), '--guidance', String(sdxl.guidance),
    '--scheduler', sdxl.scheduler, '--width', String(sdxl.width), '--height', String(sdxl.height), '--seed', String(sdxl.seed),
    '--precision', 'f32', '--output', nativePath], { stdio: 'inherit' });
  const diff = await maxPixelDiff(png, readFileSync(nativePath).toString('base64'));
  console.log(`SDXL browser vs native sdweb generate: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3, `the browser's SDXL image differs from the CLI's by up to ${diff.max}/255 (limit 3): ${JSON.stringify(diff)}`);
});

test('offline with q8_0 weights: the page quantises the cached model in wasm, generates, and matches the CLI --quantize q8_0', { timeout: 15 * MINUTES }, async () => {
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: MINUTES });
  server.close();
  server.closeAllConnections?.();
  await page.goto(`${server.url}?taesd=/taesd&weights=q8_0`);
  await page.evaluate(() => window.sdwebApp.ready);
  assert.equal(await page.inputValue('#weights'), 'q8_0');
  await page.fill('#prompt', 'offline');
  await page.fill('#steps', '1');
  await page.click('#generate');
  await page.waitForFunction(() => window.sdwebApp.lastResult?.parameters?.startsWith('offline'), null, { timeout: 12 * MINUTES, polling: 1000 });
  const { size, preview, width } = await page.evaluate(() => ({
    size: window.sdwebApp.lastResult.png.size, preview: window.sdwebApp.lastPreview, width: window.sdwebApp.lastResult.width }));
  assert.ok(size > 100);
  // TAESD (loaded from the cache) decodes ×8 from latents; the latent projection would be width/4.
  assert.equal(preview?.width, (width / 4) * 8, `preview ${JSON.stringify(preview)} is not TAESD's`);

  // The same worker through the JS API, against the native CLI quantising on load.
  const quantPng = await page.evaluate(async (params) => {
    const out = await window.sdwebApp.generator.generate(params);
    const bytes = new Uint8Array(await out.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }, PARAMS);
  const nativePath = path.join(scratch, 'native-q8.png');
  execFileSync(sdwebBin(), ['generate', '--model', FIXTURE, '--prompt', PARAMS.prompt, '--negative-prompt', PARAMS.negativePrompt,
    '--steps', String(PARAMS.steps), '--guidance', String(PARAMS.guidance), '--scheduler', PARAMS.scheduler,
    '--width', String(PARAMS.width), '--height', String(PARAMS.height), '--seed', String(PARAMS.seed),
    '--precision', 'f32', '--quantize', 'q8_0', '--output', nativePath], { stdio: 'inherit' });
  const diff = await maxPixelDiff(quantPng, readFileSync(nativePath).toString('base64'));
  console.log(`browser q8_0 (quantised in wasm) vs native --quantize q8_0: max ${diff.max}/255`);
  assert.ok(diff.max <= 3, `max ${diff.max}/255 (limit 3): ${JSON.stringify(diff)}`);

  // The cache now holds the quantised copies instead of the originals, and another q8_0 load
  // reads them: no quantise pass (and no network: the server is down).
  const cached = await page.evaluate(async () => {
    const { ModelCache } = await import('/cache.js');
    const { MODELS } = await import('/sdweb.js');
    const base = MODELS.find((m) => m.id === 'demo').url;
    const cache = await ModelCache.open();
    const info = async (p) => (await cache.info(`${base}/${p}`))?.size ?? null;
    const sizes = {
      quantised: await info('unet/diffusion_pytorch_model.sdweb-q8_0.safetensors'),
      original: await info('unet/diffusion_pytorch_model.safetensors'),
      textEncoder: await info('text_encoder/model.sdweb-q8_0.safetensors'),
    };
    cache.close();
    return { base, sizes };
  });
  const originalUnet = readFileSync(path.join(FIXTURE, 'unet/diffusion_pytorch_model.safetensors')).length;
  console.log(`cached q8_0 copies: ${JSON.stringify(cached.sizes)} (unet original ${originalUnet} bytes)`);
  assert.equal(cached.sizes.original, null, 'the f16/f32 original is dropped once quantised');
  assert.ok(cached.sizes.quantised > 0 && cached.sizes.quantised * 3 < originalUnet, JSON.stringify(cached.sizes));
  assert.ok(cached.sizes.textEncoder > 0);
  const reload = await page.evaluate(async (base) => {
    const { createGenerator } = await import('/sdweb.js');
    const events = [];
    const g = await createGenerator({ model: base, quantize: 'q8_0', onProgress: (e) => events.push(e.type) });
    g.dispose();
    return events;
  }, cached.base);
  assert.ok(!reload.includes('quantize') && !reload.includes('download'), `second load events: ${reload}`);
});

// A LoRA file dropped on the page joins the model, which reloads with it (from the cache: this
// runs offline, after the test above).
test('a LoRA file dropped on the page reloads the model with it', { timeout: 5 * MINUTES }, async () => {
  const kohya = readFileSync(path.join(ROOT, 'tests/fixtures/lora/sd1_kohya_locon.safetensors')).toString('base64');
  if (!(await page.evaluate(() => Boolean(window.sdwebApp?.generator)).catch(() => false))) {
    await page.goto(server.url);   // run on its own: the app with the demo model
    await page.evaluate(() => window.sdwebApp.ready);
  }
  await page.evaluate((b64) => {
    /** @type {any} */ (window).generatorBeforeDrop = window.sdwebApp.generator;
    const data = new DataTransfer();
    data.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'sd1_kohya_locon.safetensors'));
    document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
  }, kohya);
  await page.waitForFunction(() => document.getElementById('phase').textContent.includes('LoRA <lora:sd1_kohya_locon:1>'), null, { timeout: 4 * MINUTES, polling: 500 });
  assert.ok(await page.evaluate(() => window.sdwebApp.generator && window.sdwebApp.generator !== window.generatorBeforeDrop));
});

test('the widget generates on a third-party page (another origin) without CSS leaking', { timeout: 15 * MINUTES }, async () => {
  // The app comes from a fresh server (the one above is stopped); the blog page from another port.
  server = await startServer({ port: 0 });
  const blog = path.join(scratch, 'blog');
  mkdirSync(blog, { recursive: true });
  writeFileSync(path.join(blog, 'index.html'), `<!doctype html><meta charset="utf-8"><title>My blog</title>
<style>* { font-family: serif; color: red !important; } button { display: none; } img { border: 9px solid blue; }</style>
<h1>A post with a generator</h1>
<script type="module" src="${server.url}sd-generator.js"></script>
<sd-generator model="${server.url}models/demo" prompt="a lighthouse" steps="1" guidance="7.5" scheduler="euler" width="32" height="32" seed="7" portable></sd-generator>`);
  thirdParty = await startServer({ port: 0, root: blog });
  const blogPage = await context.newPage();
  logConsole(blogPage, 'blog');
  await blogPage.goto(thirdParty.url);
  const result = await blogPage.evaluate(async () => {
    await customElements.whenDefined('sd-generator');
    const widget = document.querySelector('sd-generator');
    const done = new Promise((resolve, reject) => {
      widget.addEventListener('sd-result', (e) => resolve(e.detail));
      widget.addEventListener('sd-error', (e) => reject(new Error(e.detail.message)));
    });
    const button = widget.shadowRoot.querySelector('.go');
    const buttonDisplay = getComputedStyle(button).display;
    button.click();
    const detail = await done;
    const img = widget.shadowRoot.querySelector('img');
    const bytes = new Uint8Array(await detail.png.arrayBuffer());
    let png = '';
    for (const b of bytes) png += String.fromCharCode(b);
    return { seed: detail.seed, parameters: detail.parameters, png: btoa(png), buttonDisplay, imgBorder: getComputedStyle(img).borderTopWidth, pageOrigin: location.origin };
  });
  await blogPage.screenshot({ path: path.join(SHOTS, 'widget-third-party.png') });
  assert.notEqual(new URL(thirdParty.url).origin, new URL(server.url).origin);
  assert.equal(result.seed, 7);
  assert.match(result.parameters, /^a lighthouse\nSteps: 1, /);
  const nativePath = path.join(scratch, 'native-widget.png');
  execFileSync(sdwebBin(), ['generate', '--model', FIXTURE, '--prompt', 'a lighthouse', '--steps', '1', '--guidance', '7.5',
    '--scheduler', 'euler', '--width', '32', '--height', '32', '--seed', '7', '--precision', 'f32', '--output', nativePath], { stdio: 'inherit' });
  const diff = await maxPixelDiff(result.png, readFileSync(nativePath).toString('base64'));
  console.log(`widget vs native sdweb generate: max ${diff.max}/255, mean ${diff.mean?.toFixed(4)}/255`);
  assert.ok(diff.max <= 3, `widget image differs from the CLI's by up to ${diff.max}/255 (limit 3): ${JSON.stringify(diff)}`);
  assert.notEqual(result.buttonDisplay, 'none', 'page CSS hid the widget button');
  assert.notEqual(result.imgBorder, '9px', 'page CSS styled the widget image');
});

// Quantised weights in the browser: the page's weight picker shows download and GPU sizes
// before anything downloads, and the demo model quantised to q8_0 while loading (in wasm)
// gives the native CLI's `--quantize q8_0` image.
// Run: cd tests/browser && npm ci && node --test quant.test.mjs   (needs www/pkg: www/build-wasm.sh dev)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/server.mjs';
import { launch, logConsole } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = path.join(ROOT, 'tests/fixtures/sd1_tiny');
const MINUTES = 60_000;
const PARAMS = { prompt: 'a lighthouse on a cliff, oil painting', negativePrompt: '', steps: 2, guidance: 7.5, scheduler: 'euler', width: 32, height: 32, seed: 77 };

const scratch = mkdtempSync(path.join(tmpdir(), 'sdweb-quant-test-'));
let server, browser, page;

before(async () => {
  assert.ok(existsSync(path.join(ROOT, 'www/pkg/sdweb_bg.wasm')), 'www/pkg is missing: run www/build-wasm.sh dev first');
  server = await startServer({ port: 0, testHooks: true });
  browser = await launch();
  page = await (await browser.newContext()).newPage();
  logConsole(page);
});

after(async () => {
  await browser?.close();
  server?.close();
  rmSync(scratch, { recursive: true, force: true });
});

test('q8_0 quantised while loading in the browser gives the CLI --quantize q8_0 image; the picker shows sizes', { timeout: 15 * MINUTES }, async () => {
  await page.goto(`${server.url}?weights=q8_0`);
  await page.evaluate(() => window.sdwebApp.ready);
  assert.equal(await page.inputValue('#weights'), 'q8_0');
  assert.match(await page.textContent('#weights-note'), /Quantised while loading/);

  const png = await page.evaluate(async (params) => {
    const out = await window.sdwebApp.generator.generate(params);
    const bytes = new Uint8Array(await out.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }, PARAMS);

  const nativePath = path.join(scratch, 'native-q8.png');
  const bin = process.env.SDWEB_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug/sdweb');
  if (!existsSync(bin)) execFileSync('cargo', ['build', '-p', 'sdweb', '--bin', 'sdweb'], { cwd: ROOT, stdio: 'inherit' });
  execFileSync(bin, ['generate', '--model', FIXTURE, '--prompt', PARAMS.prompt, '--steps', String(PARAMS.steps),
    '--guidance', String(PARAMS.guidance), '--scheduler', PARAMS.scheduler, '--width', String(PARAMS.width),
    '--height', String(PARAMS.height), '--seed', String(PARAMS.seed), '--precision', 'f32', '--quantize', 'q8_0',
    '--output', nativePath], { stdio: 'inherit' });
  const diff = await page.evaluate(async ([a, b]) => {
    const pixels = async (b64) => {
      const bitmap = await createImageBitmap(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/png' }),
        { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    };
    const [x, y] = [await pixels(a), await pixels(b)];
    let max = 0;
    for (let i = 0; i < x.length; i++) if (i % 4 !== 3) max = Math.max(max, Math.abs(x[i] - y[i]));
    return { max, n: x.length, m: y.length };
  }, [png, readFileSync(nativePath).toString('base64')]);
  console.log(`browser q8_0 (quantised in wasm) vs native --quantize q8_0: max ${diff.max}/255`);
  assert.equal(diff.n, diff.m);
  assert.ok(diff.max <= 3, `max ${diff.max}/255 (limit 3)`);

  // The cache now holds the quantised copies instead of the originals, and a second load
  // reads them without any request for weights.
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
  await fetch(`${server.url}__requests/clear`, { method: 'POST' });
  const reload = await page.evaluate(async (base) => {
    const { createGenerator } = await import('/sdweb.js');
    const events = [];
    const g = await createGenerator({ model: base, quantize: 'q8_0', onProgress: (e) => events.push(e.type) });
    g.dispose();
    return events;
  }, cached.base);
  const weightRequests = (await (await fetch(`${server.url}__requests`)).json()).filter((r) => /safetensors/.test(JSON.stringify(r)));
  assert.deepEqual(weightRequests, [], 'a second q8_0 load must not fetch weights');
  assert.ok(!reload.includes('quantize') && !reload.includes('download'), `second load events: ${reload}`);

  // Sizes are shown per format before a big model downloads (picking it only shows the button).
  await page.selectOption('#model', 'sd15');
  const notes = {};
  for (const format of ['f16', 'q8_0', 'q4_0']) {
    await page.selectOption('#weights', format);
    notes[format] = await page.textContent('#weights-note');
  }
  for (const note of Object.values(notes)) assert.match(note, /Download 2\.1 GB[^]*GPU memory for the weights/);
  assert.notEqual(notes.f16, notes.q4_0);
  assert.equal(await page.isVisible('#load-model'), true);
});

// The stage (the preview of the image being generated, then the result with its download) and
// this session's gallery. Every result says what made it (`mode`: txt2img | img2img | inpaint,
// and its `strength`, from sdweb.js), so the stage and each thumbnail show it.

/** @typedef {import('../sdweb.js').GenerateResult & { url?: string }} Result  url: its object URL, once shown */

// The A1111 text starts with the prompt, up to the first newline.
const promptOf = (res) => (res.parameters || '').split('\n')[0];
const isImg2img = (res) => res.mode === 'img2img' || res.mode === 'inpaint';
const kindOf = (res) => (isImg2img(res) ? res.mode : '');
const strengthOf = (res) => String(res.strength ?? '');
/** @param {Result} res */
const urlOf = (res) => res.url || (res.url = URL.createObjectURL(res.png));
// Tiny images (the demo model's 32 px) are scaled up crisply instead of blurred.
const isSmall = (w, h) => Math.max(w, h) < 256;

/**
 * @typedef {object} GalleryElements
 * @property {HTMLElement} stage
 * @property {HTMLImageElement} result
 * @property {HTMLCanvasElement} preview
 * @property {HTMLElement} resultMeta
 * @property {HTMLElement} resultInfo
 * @property {HTMLAnchorElement} download
 * @property {HTMLButtonElement} useResult
 * @property {HTMLElement} gallery the <ul>
 * @property {HTMLElement} galleryEmpty
 *
 * @param {GalleryElements} el
 * @param {{ onUse: (res: Result) => void }} deps onUse: "Use as start image" on the shown result
 */
export function createGallery(el, { onUse }) {
  /** @type {Result | null} */
  let shown = null;        // the result on the stage
  /** @type {{ width: number, height: number } | null} */
  let lastPreview = null;  // the newest preview's size (a test hook)

  /** Puts a result on the stage. @param {Result} res */
  function show(res) {
    shown = res;
    const url = urlOf(res);
    el.result.src = url;
    el.result.alt = `Generated image: ${promptOf(res)}`;
    el.result.hidden = false;
    el.preview.hidden = true;
    el.stage.classList.remove('empty');
    el.stage.classList.toggle('pixelated', isSmall(res.width, res.height));
    el.download.href = url;
    el.download.download = `sdweb-${res.seed}.png`;
    const t = res.timings?.totalMs;
    const i2i = isImg2img(res) ? ` · ${kindOf(res)} ${strengthOf(res)}` : '';
    el.resultInfo.textContent = `Seed ${res.seed} · ${res.width}×${res.height}${i2i}${t ? ` · ${(t / 1000).toFixed(1)} s` : ''}`;
    el.resultMeta.hidden = false;
  }

  /** Adds a result to the front of the gallery. @param {Result} res */
  function add(res) {
    el.gallery.prepend(thumbnail(res));
    el.galleryEmpty.hidden = true;
  }

  /** @param {Result} res */
  function thumbnail(res) {
    const li = document.createElement('li');
    li.className = 'thumb';
    const kind = kindOf(res);
    if (kind) li.classList.add(kind);
    const a = document.createElement('a');
    a.href = urlOf(res); a.download = `sdweb-${res.seed}.png`; a.textContent = a.download;
    li.append(thumbButton(res, kind), a, parametersOf(res));
    return li;
  }

  function thumbButton(res, kind) {
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.title = res.parameters;
    btn.setAttribute('aria-label', `Show ${kind === 'inpaint' ? 'inpainted ' : kind ? 'img2img ' : ''}image with seed ${res.seed}`);
    const img = document.createElement('img');
    img.src = urlOf(res); img.alt = ''; img.loading = 'lazy';
    if (isSmall(res.width, res.height)) img.classList.add('pixelated');
    btn.append(img);
    if (kind) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = kind;
      badge.setAttribute('aria-hidden', 'true');   // the button's label already says so
      btn.append(badge);
    }
    btn.addEventListener('click', () => show(res));
    return btn;
  }

  /**
   * Shows a step's preview in place of the result.
   * @param {CanvasImageSource & { width: number, height: number, close?: () => void }} bitmap
   * @param {{ width: number, height: number } | null} target the final image's size, if known
   */
  function preview(bitmap, target) {
    const c = el.preview;
    lastPreview = { width: bitmap.width, height: bitmap.height };
    // The preview is at latent resolution; draw it at the final image's size (smoothly) so it
    // fills the same space as the finished image will.
    const fits = target && target.width * bitmap.height === target.height * bitmap.width;
    const w = fits ? target.width : bitmap.width, h = fits ? target.height : bitmap.height;
    const small = isSmall(w, h);
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

  /** After a failed or stopped generation: the last finished image rather than a stale preview. */
  function restore() {
    el.preview.hidden = true;
    el.result.hidden = !el.result.src;
    el.stage.classList.toggle('empty', !el.result.src);
  }

  el.useResult.addEventListener('click', () => { if (shown) onUse(shown); });

  return { show, add, preview, restore, get lastPreview() { return lastPreview; } };
}

/** The result's parameters text, folded away. @param {Result} res */
function parametersOf(res) {
  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = 'Parameters';
  const pre = document.createElement('pre');
  pre.textContent = res.parameters;
  details.append(summary, pre);
  return details;
}

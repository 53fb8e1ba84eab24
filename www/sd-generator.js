// <sd-generator model="..."> — an embeddable Stable Diffusion widget.
//
//   <script type="module" src="https://host/sd-generator.js"></script>
//   <sd-generator model="https://host/models/demo" prompt="a lighthouse"></sd-generator>
//
// Attributes (defaults for the form): model (required), prompt, negative-prompt, steps,
// guidance, scheduler, width, height, seed, preload (load the model right away instead of on
// the first Generate).
// Events (bubbling, composed): sd-progress {detail: progress event}, sd-result {detail: {png,
// url, seed, parameters, width, height}}, sd-error {detail: {message}}.
// Methods: generate(overrides) -> Promise<result>, stop().
// The object URL in a result stays valid until the element shows its next image.
//
// Everything visual lives in the shadow root; `all: initial` on the container stops the
// host page's inherited styles (font, color, ...) from leaking in.

import { progressText } from './progress-text.js';

// Resolved against this module, not the page, so a cross-origin embed finds its own sdweb.js.
const SDWEB_URL = new URL('./sdweb.js', import.meta.url).href;
let sdwebModule = null;
const loadSdweb = () => (sdwebModule ??= import(SDWEB_URL));

const STYLE = `
:host { display: block; max-width: 420px; }
:host([hidden]) { display: none; }
.root {
  all: initial;
  display: block;
  box-sizing: border-box;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1b1d24;
  background: #ffffff;
  border: 1px solid #dfe2ea;
  border-radius: 10px;
  padding: 10px;
  --accent: #4f46e5;
  --on-accent: #ffffff;
  --muted: #5f6472;
  --line: #dfe2ea;
  --field: #ffffff;
  --stage: repeating-conic-gradient(#eceef3 0% 25%, #f7f8fb 0% 50%) 0 0 / 16px 16px;
}
@media (prefers-color-scheme: dark) {
  .root {
    color: #e7e9ef; background: #181b22; border-color: #2b303b;
    --accent: #7c74ff; --on-accent: #0d0d14; --muted: #9aa0ae; --line: #2b303b; --field: #11141a;
    --stage: repeating-conic-gradient(#1c2029 0% 25%, #161920 0% 50%) 0 0 / 16px 16px;
  }
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
form { display: flex; gap: 6px; margin: 0; }
input {
  flex: 1; min-width: 0; font: inherit; color: inherit; background: var(--field);
  border: 1px solid var(--line); border-radius: 7px; padding: 6px 8px; margin: 0;
}
button {
  font: inherit; font-weight: 600; cursor: pointer; border-radius: 7px; padding: 6px 12px; margin: 0;
  border: 1px solid var(--accent); background: var(--accent); color: var(--on-accent); min-width: 88px;
}
button.stop { background: transparent; color: inherit; border-color: var(--line); }
button:disabled { opacity: 0.5; cursor: default; }
input:focus-visible, button:focus-visible, a:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
progress {
  display: block; width: 100%; height: 4px; margin: 8px 0 4px; border: 0; border-radius: 2px;
  appearance: none; -webkit-appearance: none; background: var(--line); overflow: hidden;
}
progress::-webkit-progress-bar { background: var(--line); }
progress::-webkit-progress-value { background: var(--accent); }
progress::-moz-progress-bar { background: var(--accent); }
.status:empty { display: none; }
.status { font-size: 12px; color: var(--muted); min-height: 1.4em; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.frame {
  display: grid; place-items: center; margin-top: 6px; min-height: 120px;
  background: var(--stage); border-radius: 7px; overflow: hidden;
}
img, canvas { display: block; max-width: 100%; height: auto; border: 0; margin: 0; padding: 0; }
.pixelated img, .pixelated canvas { width: 100%; image-rendering: pixelated; }
.foot { display: flex; justify-content: space-between; align-items: center; gap: 8px; margin-top: 6px; font-size: 12px; color: var(--muted); }
a { color: var(--accent); text-decoration: none; font-weight: 600; }
a:hover { text-decoration: underline; }
.error { margin-top: 6px; padding: 6px 8px; border-radius: 6px; font-size: 12px; background: #fdecec; color: #8a1c1f; border: 1px solid #e5484d; overflow-wrap: anywhere; }
@media (prefers-color-scheme: dark) { .error { background: #2c1416; color: #ffb4b4; } }
`;

const TEMPLATE = `
<div class="root" part="root">
  <form>
    <input class="prompt" type="text" aria-label="Prompt" placeholder="Describe an image…">
    <button class="go" type="submit">Generate</button>
  </form>
  <progress max="1" value="0" hidden></progress>
  <div class="status" aria-live="polite"></div>
  <div class="frame" hidden><img alt=""><canvas hidden aria-hidden="true"></canvas></div>
  <div class="foot" hidden><span>AI-generated image</span><a class="dl" download>Download PNG</a></div>
  <div class="error" role="alert" hidden></div>
</div>`;

const num = (v) => (v == null || v === '' ? undefined : Number(v));

class SdGenerator extends HTMLElement {
  static observedAttributes = ['model', 'prompt'];

  #ui;
  #gen = null;          // Promise<generator> once loading started
  #abort = null;        // AbortController while generating
  #url = null;          // object URL of the image on show

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${STYLE}</style>${TEMPLATE}`;
    const q = (s) => root.querySelector(s);
    this.#ui = {
      form: q('form'), prompt: q('.prompt'), go: q('.go'), progress: q('progress'), status: q('.status'),
      frame: q('.frame'), img: q('img'), canvas: q('canvas'), foot: q('.foot'), dl: q('.dl'), error: q('.error'),
    };
    this.#ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (this.#abort) this.stop();
      else this.generate().catch(() => {});   // already reported via sd-error and the error box
    });
  }

  connectedCallback() {
    if (!this.#ui.prompt.value) this.#ui.prompt.value = this.getAttribute('prompt') || '';
    if (this.hasAttribute('preload')) this.#load().catch(() => {});
  }

  disconnectedCallback() {
    // Moving the element around the DOM also disconnects it; only free the GPU when it is gone.
    queueMicrotask(() => { if (!this.isConnected) this.#dispose(); });
  }

  attributeChangedCallback(name, oldValue, value) {
    if (oldValue === value) return;
    if (name === 'model') this.#dispose();
    if (name === 'prompt') this.#ui.prompt.value = value || '';
  }

  stop() { this.#abort?.abort(); }

  async generate(overrides = {}) {
    if (this.#abort) throw new Error('sd-generator: a generation is already running');
    const ui = this.#ui;
    const abort = (this.#abort = new AbortController());
    ui.error.hidden = true;
    ui.go.textContent = 'Stop';
    ui.go.classList.add('stop');
    ui.progress.hidden = false;
    this.#setStatus('Loading model…', null);
    try {
      const gen = await this.#load();
      if (abort.signal.aborted) throw new DOMException('Aborted', 'AbortError');
      const info = gen.info;
      const attr = (n) => this.getAttribute(n);
      const opts = {
        prompt: ui.prompt.value,
        negativePrompt: attr('negative-prompt') ?? '',
        steps: num(attr('steps')) ?? info.steps,
        guidance: num(attr('guidance')) ?? info.guidance,
        scheduler: attr('scheduler') || undefined,
        width: num(attr('width')) ?? info.width,
        height: num(attr('height')) ?? info.height,
        seed: num(attr('seed')),
        ...overrides,
      };
      if ('prompt' in overrides) ui.prompt.value = overrides.prompt;
      this.#setStatus('Starting…', 0);
      const res = await gen.generate({ ...opts, signal: abort.signal });
      if (this.#url) URL.revokeObjectURL(this.#url);
      const url = (this.#url = URL.createObjectURL(res.png));
      ui.img.src = url;
      ui.img.alt = `AI-generated image: ${opts.prompt}`;
      ui.img.hidden = false;
      ui.canvas.hidden = true;
      ui.frame.hidden = false;
      ui.frame.classList.toggle('pixelated', Math.max(res.width, res.height) < 256);
      ui.dl.href = url;
      ui.dl.download = `sdweb-${res.seed}.png`;
      ui.foot.hidden = false;
      this.#setStatus(`Seed ${res.seed} · ${res.width}×${res.height}`, 1);
      const detail = { png: res.png, url, seed: res.seed, parameters: res.parameters, width: res.width, height: res.height };
      this.#emit('sd-result', detail);
      return detail;
    } catch (err) {
      if (err?.name === 'AbortError') {
        this.#setStatus('Stopped.', 0);
      } else {
        const message = err?.message || String(err);
        ui.error.textContent = message;
        ui.error.hidden = false;
        ui.progress.hidden = true;
        this.#setStatus('', 0);
        this.#emit('sd-error', { message });
      }
      ui.canvas.hidden = true;
      ui.img.hidden = !ui.img.src;
      ui.frame.hidden = !ui.img.src;
      throw err;
    } finally {
      this.#abort = null;
      ui.go.textContent = 'Generate';
      ui.go.classList.remove('stop');
    }
  }

  #load() {
    if (!this.#gen) {
      const model = this.getAttribute('model');
      if (!model) return Promise.reject(new Error('sd-generator: the "model" attribute is required'));
      const url = new URL(model, document.baseURI).href;
      const onProgress = (ev) => { this.#onProgress(ev); this.#emit('sd-progress', ev); };
      const quantize = this.getAttribute('quantize') || undefined;   // q8_0 | q4_0: smaller GPU memory and cache
      const portable = this.hasAttribute('portable');   // neither subgroups nor shader-f16 (f32)
      this.#gen = loadSdweb().then((m) => m.createGenerator({ model: url, onProgress, quantize, portable }));
      // A failed load must be retryable on the next Generate.
      this.#gen.catch(() => { this.#gen = null; });
    }
    return this.#gen;
  }

  #dispose() {
    this.stop();
    const gen = this.#gen;
    this.#gen = null;
    gen?.then((g) => g.dispose(), () => {});
  }

  #onProgress(ev) {
    if (ev.type === 'preview') {
      if (ev.bitmap) this.#showPreview(ev.bitmap);
      return;
    }
    const line = progressText(ev, { compact: true });
    if (line) this.#setStatus(line.text, line.frac);
  }

  #showPreview(bitmap) {
    const c = this.#ui.canvas;
    c.width = bitmap.width; c.height = bitmap.height;
    c.getContext('2d').drawImage(bitmap, 0, 0);
    c.hidden = false;
    this.#ui.img.hidden = true;
    this.#ui.frame.hidden = false;
    this.#ui.frame.classList.toggle('pixelated', Math.max(c.width, c.height) < 256);
  }

  #setStatus(text, frac) {
    this.#ui.status.textContent = text;
    if (frac == null) this.#ui.progress.removeAttribute('value');
    else this.#ui.progress.value = frac;
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

if (!customElements.get('sd-generator')) customElements.define('sd-generator', SdGenerator);
export { SdGenerator };

// The generate form: prompt and sampling fields, the seed, Generate and Stop, and one generation
// at a time, from the form's parameters to the image on the stage.
import { progressText } from '../progress-text.js';
import { fitDown } from './output-size.js';

const SCHEDULER_NAMES = {
  ddim: 'DDIM', euler: 'Euler', 'euler-a': 'Euler ancestral', 'dpmpp-2m': 'DPM++ 2M',
  'dpmpp-2m-karras': 'DPM++ 2M Karras', lcm: 'LCM', pndm: 'PNDM',
};

/**
 * @typedef {object} FormElements
 * @property {HTMLFormElement} form
 * @property {HTMLTextAreaElement} prompt
 * @property {HTMLTextAreaElement} negative
 * @property {HTMLInputElement} steps
 * @property {HTMLInputElement} guidance
 * @property {HTMLSelectElement} scheduler
 * @property {HTMLInputElement} width
 * @property {HTMLInputElement} height
 * @property {HTMLInputElement} seed
 * @property {HTMLInputElement} randomSeed
 * @property {HTMLButtonElement} reuseSeed
 * @property {HTMLButtonElement} generate
 * @property {HTMLButtonElement} stop
 *
 * @typedef {object} FormDeps
 * @property {() => import('../sdweb.js').Generator | null} generator the loaded generator
 * @property {ReturnType<typeof import('./init-image.js').createInitImage>} initImage
 * @property {ReturnType<typeof import('./gallery.js').createGallery>} gallery
 * @property {(text: string, frac: number | null) => void} setPhase
 * @property {(err: unknown) => void} showError
 * @property {() => void} clearError
 * @property {() => void} onChange a generation started or ended (buttons follow it)
 */

/**
 * @param {FormElements} el
 * @param {FormDeps} deps
 */
export function createGenerateForm(el, deps) {
  /** @type {AbortController | null} */
  let running = null;      // the generation in progress
  let startedAt = 0;       // performance.now() when it started, for "Done in"
  /** @type {{ width: number, height: number } | null} */
  let target = null;       // the size of the image being generated, for the preview
  /** @type {import('./gallery.js').Result | null} */
  let lastResult = null;   // the newest image (for "Reuse last")

  /** Form defaults follow the model that was just loaded. @param {Record<string, any>} info */
  function applyInfo(info) {
    el.steps.value = info.steps;
    el.guidance.value = info.guidance;
    deps.initImage.applyModelSize(info);
    const def = SCHEDULER_NAMES[info.scheduler] || info.scheduler;
    el.scheduler.replaceChildren(
      new Option(`Model default${def ? ` (${def})` : ''}`, ''),
      ...info.schedulers.map((s) => new Option(SCHEDULER_NAMES[s] || s, s)));
  }

  /** The generator's events other than its load's: steps, previews, decoding, done. */
  function onProgress(ev) {
    if (ev.type === 'preview') {
      if (ev.bitmap) deps.gallery.preview(ev.bitmap, target);
      return;
    }
    const line = progressText(ev, { startedAt });
    if (line) deps.setPhase(line.text, line.frac);
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
      ...deps.initImage.params(),
    };
  }

  // The size generate() will make: the fields', else the start image's (rounded), else the model's.
  function targetSize(params, info) {
    const m = info.sizeMultiple || 8;
    const init = deps.initImage.image;
    return {
      width: params.width ?? (init ? fitDown(init.width, m) : info.width),
      height: params.height ?? (init ? fitDown(init.height, m) : info.height),
    };
  }

  async function generate() {
    const gen = deps.generator();
    if (!gen || running) return;
    deps.clearError();
    let params;
    try { params = readParams(); } catch (e) {
      deps.showError(e);
      deps.initImage.revealMask();
      return;
    }
    running = new AbortController();
    deps.onChange();
    startedAt = performance.now();
    target = targetSize(params, gen.info);
    deps.setPhase(params.initImage ? 'Encoding the start image…' : 'Starting…', 0);
    try {
      const res = await gen.generate({ ...params, signal: running.signal });
      deps.gallery.show(res);
      lastResult = res;
      deps.gallery.add(res);
      el.reuseSeed.title = `Use seed ${res.seed} from the last image`;
    } catch (err) {
      if (err && err.name === 'AbortError') deps.setPhase('Stopped.', 0);
      else { deps.setPhase('Failed.', 0); deps.showError(err); }
      deps.gallery.restore();
    } finally {
      running = null;
      target = null;
      deps.onChange();
    }
  }

  el.form.addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  el.stop.addEventListener('click', () => running?.abort());
  el.prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
  });
  el.randomSeed.addEventListener('change', () => {
    el.seed.disabled = el.randomSeed.checked;
    if (!el.randomSeed.checked && el.seed.value === '' && lastResult) el.seed.value = String(lastResult.seed);
    if (!el.randomSeed.checked) el.seed.focus();
  });
  el.reuseSeed.addEventListener('click', () => {
    if (!lastResult) return;
    el.randomSeed.checked = false;
    el.seed.disabled = false;
    el.seed.value = String(lastResult.seed);
  });

  return {
    applyInfo,
    onProgress,
    /** Whether a generation is running. */
    get busy() { return !!running; },
    /** The newest image, or null. */
    get lastResult() { return lastResult; },
    /** Stops the generation in progress, if any. */
    stop() { running?.abort(); },
    /** @param {boolean} ready a generator is loaded (and WebGPU works) */
    renderButtons(ready) {
      el.generate.disabled = !ready || !!running;
      el.stop.disabled = !running;
      el.reuseSeed.disabled = !lastResult;
    },
  };
}

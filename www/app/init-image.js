// img2img and inpainting input: the start image (file picker, drop, paste, "Use as start
// image"), the output size it implies, the strength slider, and the switch to inpainting,
// which shows the mask editor (<sd-mask-editor>, ../mask-editor.js) for the image.
import { listenForImages } from './image-drop.js';
import { createOutputSize } from './output-size.js';

export const MASK_EMPTY = 'Paint the area to repaint first (on the image under “Inpainting mask”), or turn off “Paint a mask”.';
const INPAINT_HINT = 'Inpainting usually wants 1: the painted area is redrawn from scratch. Lower keeps some of what is there.';

/**
 * @typedef {{ file: Blob, name: string, width: number, height: number, url: string }} StartImage
 *
 * @typedef {object} InitImageElements
 * @property {HTMLElement} drop the drop zone
 * @property {HTMLInputElement} file
 * @property {HTMLButtonElement} clear
 * @property {HTMLImageElement} preview
 * @property {HTMLElement} help
 * @property {HTMLElement} name
 * @property {HTMLElement} dims
 * @property {import('./output-size.js').SizeElements} size
 * @property {HTMLInputElement} strength
 * @property {HTMLElement} strengthValue
 * @property {HTMLElement} strengthHint
 * @property {HTMLElement} maskToggle
 * @property {HTMLInputElement} maskMode
 * @property {HTMLElement} maskPanel
 * @property {import('../mask-editor.js').SdMaskEditor} maskEditor
 *
 * @typedef {object} InitImageDeps
 * @property {() => Record<string, any> | null} info the loaded generator's info, if any
 * @property {(err: unknown) => void} showError
 * @property {() => void} clearError
 * @property {(msg: string) => boolean} errorShows
 * @property {(file: File) => void} [onLora] a `.safetensors` file dropped on the page
 */

/**
 * @param {InitImageElements} el
 * @param {InitImageDeps} deps
 */
export function createInitImage(el, deps) {
  /** @type {StartImage | null} */
  let init = null;
  const size = createOutputSize(el.size, { info: deps.info, image: () => init });
  // One strength per mode. Inpainting's is null until the user moves the slider: generate()
  // then gets no strength and uses its inpainting default (1.0).
  const strengthFor = { img2img: 0.8, inpaint: null };
  let maskModeShown = false;
  const IMG2IMG_HINT = el.strengthHint.textContent;
  const maskOn = () => !!init && el.maskMode.checked;

  /** @param {Blob} file @param {string} [name] */
  async function set(file, name) {
    if (!file) return;
    const label = name || /** @type {File} */ (file).name;
    if (file.type && !file.type.startsWith('image/')) {
      deps.showError(`“${label || 'That file'}” is not an image.`);
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (e) {
      deps.showError(`Could not read “${label || 'that image'}” as an image (${e.message || e}).`);
      return;
    }
    const { width, height } = bitmap;
    bitmap.close();
    deps.clearError();
    if (init) URL.revokeObjectURL(init.url);
    init = { file, name: label || 'image', width, height, url: URL.createObjectURL(file) };
    size.imagePicked();
    render();
  }

  function clear() {
    if (!init) return;
    URL.revokeObjectURL(init.url);
    init = null;
    el.file.value = '';
    size.imageRemoved();
    render();
  }

  function render() {
    el.drop.classList.toggle('has-image', !!init);
    el.preview.hidden = !init;
    el.clear.hidden = !init;
    el.name.hidden = el.dims.hidden = !init;
    el.help.hidden = !!init;
    el.strength.disabled = !init;
    el.maskToggle.hidden = !init;
    if (!init) el.maskMode.checked = false;
    el.maskEditor.image = init;   // a new image: a new, empty mask
    renderMaskMode();
    if (init) {
      el.preview.src = init.url;
      el.preview.alt = `Start image: ${init.name}`;
      el.name.textContent = init.name;
      el.name.title = init.name;
      el.dims.textContent = `${init.width}×${init.height} · drop, paste or click to replace`;
    } else {
      el.preview.removeAttribute('src');
      el.preview.alt = '';
    }
    size.renderNote();
  }

  // Shows or hides the mask editor; the strength slider switches to the mode's own value.
  function renderMaskMode() {
    const on = maskOn();
    el.maskPanel.hidden = !on;
    if (on === maskModeShown) return;
    maskModeShown = on;
    el.strength.value = String(on ? (strengthFor.inpaint ?? 1) : strengthFor.img2img);
    renderStrength();
    el.strengthHint.textContent = on ? INPAINT_HINT : IMG2IMG_HINT;
  }

  const renderStrength = () => { el.strengthValue.textContent = Number(el.strength.value).toFixed(2); };

  /**
   * What generate() gets from here: nothing without a start image; img2img: the slider's
   * strength; inpainting: a copy of the mask (painting during the run doesn't change it), and a
   * strength only if the user chose one. Throws when inpainting with nothing painted.
   */
  function params() {
    if (!init) return {};
    if (!maskOn()) return { initImage: init.file, strength: Number(el.strength.value) };
    const mask = el.maskEditor.exportMask();
    if (!mask) throw new Error(MASK_EMPTY);
    return { initImage: init.file, mask, ...(strengthFor.inpaint != null ? { strength: strengthFor.inpaint } : {}) };
  }

  el.strength.addEventListener('input', () => {
    strengthFor[maskOn() ? 'inpaint' : 'img2img'] = Number(el.strength.value);
    renderStrength();
  });
  el.maskMode.addEventListener('change', () => {
    renderMaskMode();
    if (maskOn()) el.maskPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  });
  // Once something is painted, the "paint first" error has been dealt with.
  el.maskEditor.addEventListener('sd-mask-change', (e) => {
    if (/** @type {CustomEvent} */ (e).detail.painted && deps.errorShows(MASK_EMPTY)) deps.clearError();
  });
  el.file.addEventListener('change', () => {
    const file = el.file.files?.[0];
    if (file) set(file);
  });
  el.clear.addEventListener('click', () => { clear(); el.file.focus(); });
  // The whole drop zone opens the file picker (its own label and button do their own thing).
  el.drop.addEventListener('click', (e) => {
    if (/** @type {Element} */ (e.target).closest('button, label, input, a')) return;
    el.file.click();
  });
  listenForImages(el.drop, { onImage: set, onError: deps.showError, onLora: deps.onLora });
  renderStrength();

  return {
    /** The start image, or null. */
    get image() { return init; },
    set,
    clear,
    params,
    /** @param {Record<string, any>} info */
    applyModelSize: (info) => size.applyModel(info),
    /** Scrolls the drop zone into view. */
    reveal() { el.drop.scrollIntoView({ block: 'nearest', behavior: 'smooth' }); },
    /** Scrolls the mask editor into view, when inpainting. */
    revealMask() { if (maskOn()) el.maskPanel.scrollIntoView({ block: 'nearest', behavior: 'smooth' }); },
  };
}

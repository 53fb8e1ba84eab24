// The width/height fields: who set them last (the model's defaults, the start image, or the
// user, whose own size is kept when an image is picked), and the note under the drop zone when
// the size differs from the start image's or is far larger than the model was trained on.

/** Rounds down to a multiple of m (at least m). @param {number} v @param {number} m */
export const fitDown = (v, m) => Math.max(m, Math.floor(v / m) * m);

/**
 * @typedef {object} SizeElements
 * @property {HTMLInputElement} width
 * @property {HTMLInputElement} height
 * @property {HTMLElement} note
 * @property {HTMLElement} noteText
 * @property {HTMLButtonElement} action the note's button: the obvious fix
 *
 * @typedef {{ width: number, height: number }} Size
 *
 * @param {SizeElements} el
 * @param {object} deps
 * @param {() => Record<string, any> | null} deps.info the loaded generator's info, if any
 * @param {() => Size | null} deps.image the start image, if any
 */
export function createOutputSize(el, { info, image }) {
  /** @type {'model' | 'image' | 'user'} */
  let source = 'model';
  /** @type {(() => void) | null} */
  let action = null;

  const multiple = () => info()?.sizeMultiple || Number(el.width.step) || 8;
  const set = (w, h, from) => { el.width.value = String(w); el.height.value = String(h); source = from; };
  // The model's native area (at least 512²): sizes far beyond it are slow and may not fit the GPU.
  const comfortArea = () => Math.max((info()?.width || 512) * (info()?.height || 512), 512 * 512);
  const isLarge = (w, h) => w * h > 2.25 * comfortArea();

  function fitToImage() {
    const m = multiple(), img = image();
    set(fitDown(img.width, m), fitDown(img.height, m), 'image');
  }

  // The image's size scaled down (aspect kept) to about the comfortable area.
  function scaledImageSize() {
    const m = multiple(), img = image();
    const k = Math.min(1, Math.sqrt(comfortArea() / (img.width * img.height)));
    return { w: fitDown(Math.round(img.width * k), m), h: fitDown(Math.round(img.height * k), m) };
  }
  function scaleToModel() {
    const { w, h } = scaledImageSize();
    set(w, h, 'image');
  }

  // The note's text and its button's fix, for the start image at the current size.
  function advice(img) {
    let text = '', fix = null, label = '';
    const m = multiple();
    const fw = fitDown(img.width, m), fh = fitDown(img.height, m);
    const w = Number(el.width.value), h = Number(el.height.value);
    const s = scaledImageSize();
    if (w !== fw || h !== fh) {
      text = `The ${img.width}×${img.height} image will be resized to ${w}×${h}.`;
      if (!isLarge(fw, fh)) { fix = fitToImage; label = `Use ${fw}×${fh}`; }
      else if (w !== s.w || h !== s.h) { fix = scaleToModel; label = `Use ${s.w}×${s.h}`; }
    } else if (fw !== img.width || fh !== img.height) {
      text = `Size rounded down from ${img.width}×${img.height} to ${fw}×${fh} (a multiple of ${m}).`;
    }
    if (isLarge(w, h)) {
      const nw = info()?.width || 512, nh = info()?.height || 512;
      text += `${text ? ' ' : ''}${w}×${h} is large for this model (native ${nw}×${nh}): slow, and it may run out of GPU memory.`;
      fix = scaleToModel; label = `Scale to ${s.w}×${s.h}`;
    }
    return { text, fix, label };
  }

  function renderNote() {
    const img = image();
    const { text, fix, label } = img ? advice(img) : { text: '', fix: null, label: '' };
    action = fix;
    el.noteText.textContent = text;
    el.action.textContent = label;
    el.action.hidden = !fix;
    el.note.hidden = !text;
  }

  // Width/height typed by the user are theirs; an image no longer overrides them.
  for (const inp of [el.width, el.height]) {
    inp.addEventListener('input', () => { source = 'user'; renderNote(); });
  }
  el.action.addEventListener('click', () => { action?.(); renderNote(); });

  return {
    renderNote,
    /** Form defaults follow the model just loaded (the start image's size, if there is one). */
    applyModel(info) {
      const mult = info.sizeMultiple || 8;
      for (const inp of [el.width, el.height]) { inp.step = String(mult); inp.min = String(mult); }
      set(info.width, info.height, 'model');
      if (image()) fitToImage();
      renderNote();
    },
    /** A new start image sets the size, unless the user chose one. */
    imagePicked() { if (source !== 'user') fitToImage(); },
    /** Without a start image, a size that came from it goes back to the model's. */
    imageRemoved() {
      const i = info();
      if (source === 'image' && i) set(i.width, i.height, 'model');
    },
  };
}

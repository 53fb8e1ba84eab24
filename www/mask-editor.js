// <sd-mask-editor>: paints an inpainting mask over a start image with a mouse, a pen (its eraser
// end erases) or a finger.
//
// The markup is the page's (index.html), in light DOM so the page's styles and ids apply; this
// element gives it behaviour. Its parts are marked data-part: brush (range), brush-value, eraser
// (checkbox), invert, clear (buttons), frame (the box sized to the image), image, canvas (the
// visible overlay), cursor, status.
//
//   editor.image = { url, width, height } | null   what to paint over; a new image, a new empty mask
//   editor.canvas        the mask itself, or null without an image
//   editor.exportMask()  a copy of the mask to generate with, or null when nothing is painted
//   'sd-mask-change' event, detail { painted } (pixels): after each stroke, Clear and Invert
//
// The mask is at the image's natural size: opaque white (repaint) on black (keep). The canvas
// over the image only displays it (red, made half transparent by CSS). Strokes are drawn on
// both; when a stroke ends the mask is snapped to pure black and white and the overlay redrawn
// from it, so the two always agree.

// Pixels as little-endian uint32 (ABGR): opaque white, opaque black, opaque red.
const WHITE = 0xffffffff, BLACK = 0xff000000, RED = 0xff0000ff;
// Brushes up to 1/8 of the image's short side by default, 1/2 at most.
const brushDefault = (short) => Math.max(1, Math.round(short / 8));
const brushMax = (short) => Math.max(8, Math.round(short / 2));

export class SdMaskEditor extends HTMLElement {
  /** @type {Record<string, any>} */
  #part = {};
  /** @type {{ url: string, width: number, height: number } | null} */
  #image = null;
  /** @type {CanvasRenderingContext2D | null} */
  #mask = null;
  /** @type {CanvasRenderingContext2D | null} */
  #overlay = null;
  #painted = 0;
  /** @type {{ id: number, last: { x: number, y: number }, erase: boolean } | null} */
  #stroke = null;   // while a pointer is painting

  connectedCallback() {
    if (this.#part.canvas) return;   // moved within the page: already wired
    for (const node of this.querySelectorAll('[data-part]')) this.#part[/** @type {HTMLElement} */ (node).dataset.part] = node;
    this.#wire();
  }

  get image() { return this.#image; }
  set image(image) {
    if (image === this.#image) return;
    this.#image = image;
    this.#reset();
  }

  /** The mask (white = repaint, on black), or null without an image. */
  get canvas() { return this.#mask?.canvas ?? null; }

  /** A copy of the mask, or null when nothing is painted. */
  exportMask() {
    if (!this.#settle()) return null;
    const src = this.#mask.canvas;
    const copy = document.createElement('canvas');
    copy.width = src.width;
    copy.height = src.height;
    copy.getContext('2d').drawImage(src, 0, 0);
    return copy;
  }

  #reset() {
    const p = this.#part;
    this.#stroke = null;
    p.cursor.hidden = true;
    if (!this.#image) {
      this.#mask = null;
      p.image.removeAttribute('src');
      p.canvas.width = p.canvas.height = 1;
      return;
    }
    const { width: w, height: h, url } = this.#image;
    const mask = document.createElement('canvas');
    mask.width = w;
    mask.height = h;
    this.#mask = mask.getContext('2d', { willReadFrequently: true });
    this.#mask.fillStyle = '#000';
    this.#mask.fillRect(0, 0, w, h);
    p.canvas.width = w;     // also clears the overlay
    p.canvas.height = h;
    this.#overlay = p.canvas.getContext('2d');
    this.#painted = 0;
    p.image.src = url;
    p.frame.style.setProperty('--ar', String(w / h));
    p.frame.classList.toggle('pixelated', Math.max(w, h) < 256);
    const short = Math.min(w, h);
    p.brush.max = brushMax(short);
    p.brush.value = brushDefault(short);
    this.#renderBrush();
    this.#renderStatus();
  }

  #renderBrush() { this.#part['brush-value'].textContent = `${this.#part.brush.value} px`; }

  #renderStatus() {
    const canvas = this.canvas;
    const total = canvas ? canvas.width * canvas.height : 0;
    const status = this.#part.status;
    if (!this.#painted || !total) { status.textContent = 'Nothing painted yet.'; return; }
    const pct = (100 * this.#painted) / total;
    status.textContent = `${pct < 1 ? '<1' : pct > 99 && pct < 100 ? '>99' : Math.round(pct)}% of the image will be repainted.`;
  }

  // Snaps the mask to pure white/black, redraws the overlay from it and returns how many pixels
  // are painted.
  #settle() {
    if (!this.#mask) return 0;
    const { width: w, height: h } = this.#mask.canvas;
    const img = this.#mask.getImageData(0, 0, w, h);
    const m = new Uint32Array(img.data.buffer);
    const view = this.#overlay.createImageData(w, h);
    const o = new Uint32Array(view.data.buffer);
    let painted = 0;
    for (let i = 0; i < m.length; i++) {
      if ((m[i] & 0xff) >= 128) { m[i] = WHITE; o[i] = RED; painted++; } else m[i] = BLACK;
    }
    this.#mask.putImageData(img, 0, 0);
    this.#overlay.putImageData(view, 0, 0);
    this.#painted = painted;
    this.#renderStatus();
    this.dispatchEvent(new CustomEvent('sd-mask-change', { detail: { painted } }));
    return painted;
  }

  // A pointer position in mask pixels.
  #point(e) {
    const c = this.#part.canvas;
    const r = c.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * c.width) / r.width, y: ((e.clientY - r.top) * c.height) / r.height };
  }

  #paintSegment(a, b, erase) {
    const size = Number(this.#part.brush.value);
    /** @type {[CanvasRenderingContext2D, string, GlobalCompositeOperation][]} */
    const layers = [
      [this.#mask, erase ? '#000' : '#fff', 'source-over'],
      [this.#overlay, '#f00', erase ? 'destination-out' : 'source-over'],
    ];
    for (const [ctx, color, op] of layers) {
      ctx.globalCompositeOperation = op;
      ctx.fillStyle = ctx.strokeStyle = color;
      ctx.lineWidth = size;
      ctx.lineCap = ctx.lineJoin = 'round';
      ctx.beginPath();
      if (a.x === b.x && a.y === b.y) {
        ctx.arc(a.x, a.y, size / 2, 0, 2 * Math.PI);
        ctx.fill();
      } else {
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
        ctx.stroke();
      }
      ctx.globalCompositeOperation = 'source-over';
    }
  }

  // The brush outline that follows a mouse or pen (touch has nothing hovering to show).
  #moveCursor(e) {
    const { canvas, frame, cursor: c, eraser } = this.#part;
    if (e.pointerType === 'touch' || !this.#mask) { c.hidden = true; return; }
    const r = canvas.getBoundingClientRect();
    const box = frame.getBoundingClientRect();
    const d = (Number(this.#part.brush.value) * r.width) / canvas.width;
    c.style.width = c.style.height = `${d}px`;
    c.style.transform = `translate(${e.clientX - box.left - d / 2}px, ${e.clientY - box.top - d / 2}px)`;
    c.classList.toggle('erase', this.#stroke ? this.#stroke.erase : eraser.checked);
    c.hidden = false;
  }

  #startStroke(e) {
    if (this.#stroke || !this.#mask) return;
    // Main button of a mouse, pen tip or eraser end (button 5), or a finger.
    if (e.button !== 0 && !(e.pointerType === 'pen' && e.button === 5)) return;
    e.preventDefault();
    this.#part.canvas.setPointerCapture(e.pointerId);
    const p = this.#point(e);
    this.#stroke = { id: e.pointerId, last: p, erase: this.#part.eraser.checked || e.button === 5 || (e.buttons & 32) !== 0 };
    this.#paintSegment(p, p, this.#stroke.erase);
    this.#moveCursor(e);
  }

  #continueStroke(e) {
    this.#moveCursor(e);
    const stroke = this.#stroke;
    if (!stroke || e.pointerId !== stroke.id) return;
    const events = e.getCoalescedEvents?.() ?? [];
    for (const ev of events.length ? events : [e]) {
      const p = this.#point(ev);
      this.#paintSegment(stroke.last, p, stroke.erase);
      stroke.last = p;
    }
  }

  #endStroke(e) {
    if (!this.#stroke || e.pointerId !== this.#stroke.id) return;
    this.#stroke = null;
    this.#settle();
  }

  /**
   * Fills the whole mask (`op` 'difference' with white inverts it), then settles it.
   * @param {string} color @param {GlobalCompositeOperation} [op]
   */
  #fill(color, op = 'source-over') {
    if (!this.#mask) return;
    const { width, height } = this.#mask.canvas;
    this.#mask.globalCompositeOperation = op;
    this.#mask.fillStyle = color;
    this.#mask.fillRect(0, 0, width, height);
    this.#mask.globalCompositeOperation = 'source-over';
    this.#settle();
  }

  #wire() {
    const { canvas, cursor, brush, eraser, clear, invert } = this.#part;
    canvas.addEventListener('pointerdown', (e) => this.#startStroke(e));
    canvas.addEventListener('pointermove', (e) => this.#continueStroke(e));
    const end = (e) => this.#endStroke(e);
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    canvas.addEventListener('lostpointercapture', end);
    canvas.addEventListener('pointerleave', () => { if (!this.#stroke) cursor.hidden = true; });
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    brush.addEventListener('input', () => this.#renderBrush());
    eraser.addEventListener('change', () => cursor.classList.toggle('erase', eraser.checked));
    clear.addEventListener('click', () => this.#fill('#000'));
    invert.addEventListener('click', () => this.#fill('#fff', 'difference'));
  }
}

if (!customElements.get('sd-mask-editor')) customElements.define('sd-mask-editor', SdMaskEditor);

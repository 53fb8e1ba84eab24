// What the page tells the user outside its panels: the status line over the stage (text and
// progress bar) and the dismissable error box.

/**
 * @param {{ phase: HTMLElement, progress: HTMLProgressElement }} el
 * @returns {(text: string, frac: number | null) => void} sets the line; frac null: an
 *   indeterminate bar (compiling, decoding)
 */
export function createStatusLine(el) {
  return (text, frac) => {
    el.phase.textContent = text;
    // No value attribute = indeterminate bar.
    if (frac == null) el.progress.removeAttribute('value');
    else el.progress.value = Math.min(1, Math.max(0, frac));
  };
}

/**
 * @param {{ box: HTMLElement, text: HTMLElement, close: HTMLButtonElement }} el
 */
export function createErrorBox(el) {
  /** @param {unknown} err an Error or a message */
  const show = (err) => {
    const msg = (err && /** @type {Error} */ (err).message) || String(err);
    el.text.textContent = msg;
    el.box.hidden = false;
    console.error(err);
  };
  const clear = () => { el.box.hidden = true; el.text.textContent = ''; };
  el.close.addEventListener('click', clear);
  return {
    show,
    clear,
    /** Whether the box is showing exactly this message. @param {string} msg */
    shows: (msg) => !el.box.hidden && el.text.textContent === msg,
  };
}

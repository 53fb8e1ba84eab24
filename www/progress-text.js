// The status line for a progress event (README, "Progress events"), shared by the page (app/)
// and the widget (sd-generator.js). Both bars get the same fraction; the wording differs: the
// page has room for detail (sizes, time left, what happens once), the widget's box is compact.

/** @typedef {{ type: string, [key: string]: any }} ProgressEvent */
/** @typedef {{ text: string, frac: number | null }} ProgressLine  frac null: an indeterminate bar */

/**
 * @typedef {object} ProgressTextOptions
 * @property {boolean} [compact] the widget's short wording
 * @property {string} [weights] the weight format being quantised to (page wording)
 * @property {{ loaded: number, total: number }} [overall] bytes over all files of the load, for
 *   the download bar (default: this file's)
 * @property {number} [startedAt] performance.now() when the generation started, for "Done in"
 */

// Megabytes: the page drops the decimal from 100 MB on; the widget always shows one.
const mb = (n) => { const v = n / 1e6; return v >= 100 ? v.toFixed(0) : v.toFixed(1); };
const mb1 = (n) => (n / 1e6).toFixed(1);
/** @param {{ loaded: number, total: number } | ProgressEvent} bytes */
const fraction = ({ loaded, total }) => (total ? loaded / total : null);
// `index` is 0-based.
const loadedCount = (ev) => Math.min(ev.index + 1, ev.count);

/**
 * Per event type: its bar's fraction and its text on the page and in the widget. A missing text
 * leaves the status line as it is.
 * @type {Record<string, { frac: (ev: ProgressEvent, o: ProgressTextOptions) => number | null,
 *   page?: (ev: ProgressEvent, o: ProgressTextOptions) => string, compact?: (ev: ProgressEvent) => string }>}
 */
const LINES = {
  download: {
    frac: (ev, o) => fraction(o.overall ?? ev),
    page: (ev) => `Downloading ${ev.file} ${mb(ev.loaded)} / ${mb(ev.total)} MB`,
    compact: (ev) => `Downloading ${ev.file} ${mb1(ev.loaded)} / ${mb1(ev.total)} MB`,
  },
  quantize: {
    frac: (ev) => fraction(ev),
    page: (ev, o) => `Quantising ${ev.file} to ${o.weights} (once; the cache keeps the small copy) ${mb(ev.loaded)} / ${mb(ev.total)} MB`,
    compact: (ev) => `Quantising ${ev.file} (once)`,
  },
  load: {
    frac: (ev) => loadedCount(ev) / ev.count,
    page: (ev) => `Uploading weights to the GPU (${loadedCount(ev)}/${ev.count}): ${ev.file}`,
    compact: (ev) => `Loading weights ${loadedCount(ev)}/${ev.count}`,
  },
  compile: {
    frac: () => null,
    page: () => 'Compiling shaders… (first run only; this can take a minute)',
    compact: () => 'Compiling shaders…',
  },
  step: {
    frac: (ev) => ev.step / ev.steps,
    page: (ev) => {
      const per = ev.ms ? ` · ${(ev.ms / 1000).toFixed(2)} s/step` : '';
      const left = ev.ms ? ` · ~${Math.ceil(((ev.steps - ev.step) * ev.ms) / 1000)} s left` : '';
      return `Step ${ev.step}/${ev.steps}${per}${left}`;
    },
    compact: (ev) => `Step ${ev.step}/${ev.steps}`,
  },
  decode: { frac: () => null, page: () => 'Decoding…', compact: () => 'Decoding…' },
  // The widget shows the result's seed and size instead.
  done: {
    frac: () => 1,
    page: (ev, o) => `Done in ${((performance.now() - (o.startedAt ?? 0)) / 1000).toFixed(1)} s`,
  },
};

/**
 * The status line for `ev`, or null when the event changes no text (previews, restarts, events
 * this version does not know).
 * @param {ProgressEvent} ev
 * @param {ProgressTextOptions} [options]
 * @returns {ProgressLine | null}
 */
export function progressText(ev, options = {}) {
  const line = LINES[ev.type];
  const text = line?.[options.compact ? 'compact' : 'page']?.(ev, options);
  return text == null ? null : { text, frac: line.frac(ev, options) };
}

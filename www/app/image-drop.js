// Start images that arrive without the file picker: dropped (the zone highlights while a file is
// dragged over the page; a drop anywhere on the page is taken, rather than the browser
// navigating away to the file) or pasted.

/** The first image file in a drop's or a paste's data, or null. @param {DataTransfer | null} dt */
function imageFileOf(dt) {
  for (const item of dt?.items || []) {
    if (item.kind === 'file' && item.type.startsWith('image/')) return item.getAsFile();
  }
  return [...(dt?.files || [])].find((f) => f.type.startsWith('image/')) || null;
}
/** A dropped LoRA (`.safetensors`), or null. @param {DataTransfer | null} dt */
function loraFileOf(dt) {
  return [...(dt?.files || [])].find((f) => /\.safetensors$/i.test(f.name)) || null;
}
const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
// An image dragged from this page (the result, a gallery thumbnail) comes as a URL, not a file.
const hasUrl = (e) => [...(e.dataTransfer?.types || [])].includes('text/uri-list');

/** A pasted file's name, unless it is the browser's generic "image.png". @param {File} file */
function pastedName(file) {
  const ext = (file.type.split('/')[1] || 'png').replace('jpeg', 'jpg').replace(/\+.*/, '');
  return file.name && file.name !== `image.${ext}` ? file.name : `pasted image.${ext}`;
}

/** The image a dragged URL points to, or null (not an image, or cross-origin without CORS). @param {string} url */
async function imageAt(url) {
  try {
    const blob = await (await fetch(url)).blob();
    if (!blob.type.startsWith('image/')) return null;
    const name = url.startsWith('blob:') ? 'generated image.png' : decodeURIComponent(url.split(/[/?#]/).filter(Boolean).pop() || 'image');
    return { blob, name };
  } catch {
    return null;
  }
}

/**
 * @param {HTMLElement} zone the drop zone
 * @param {object} handlers
 * @param {(image: Blob, name?: string) => void} handlers.onImage
 * @param {(message: string) => void} handlers.onError
 * @param {(file: File) => void} [handlers.onLora] a dropped `.safetensors` file (a LoRA)
 */
export function listenForImages(zone, { onImage, onError, onLora }) {
  let dragDepth = 0;   // dragenter minus dragleave over the page's elements: 0 once the drag has left

  window.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    dragDepth++;
    zone.classList.add('page-drag');
  });
  window.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    if (--dragDepth <= 0) { dragDepth = 0; zone.classList.remove('page-drag', 'dragover'); }
  });
  window.addEventListener('dragover', (e) => {
    const onZone = zone.contains(/** @type {Node} */ (e.target));
    if (!hasFiles(e) && !(onZone && hasUrl(e))) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    zone.classList.toggle('dragover', onZone);
  });
  zone.addEventListener('dragleave', (e) => {
    if (!zone.contains(/** @type {Node} */ (e.relatedTarget))) zone.classList.remove('dragover');
  });

  window.addEventListener('drop', async (e) => {
    const onZone = zone.contains(/** @type {Node} */ (e.target));
    if (!hasFiles(e) && !(onZone && hasUrl(e))) return;
    e.preventDefault();
    dragDepth = 0;
    zone.classList.remove('page-drag', 'dragover');
    const lora = onLora && loraFileOf(e.dataTransfer);
    if (lora) { onLora(lora); return; }
    const file = imageFileOf(e.dataTransfer);
    if (file) { onImage(file); return; }
    // Read now: the drop's data is gone once this handler yields.
    const url = e.dataTransfer.getData('text/uri-list').split('\n').find((l) => l && !l.startsWith('#'))?.trim();
    const image = url ? await imageAt(url) : null;
    if (image) onImage(image.blob, image.name);
    else onError('Drop an image file (PNG, JPEG, WebP…) to start from it.');
  });

  // Pasting an image anywhere on the page sets it, unless a text field is being pasted into and
  // the clipboard also has text (then the text paste goes ahead as usual).
  document.addEventListener('paste', (e) => {
    const file = imageFileOf(e.clipboardData);
    if (!file) return;
    const t = e.target;
    const editing = t instanceof HTMLTextAreaElement || (t instanceof HTMLInputElement && !['file', 'checkbox', 'range', 'button', 'submit'].includes(t.type)) || /** @type {HTMLElement} */ (t)?.isContentEditable;
    if (editing && e.clipboardData.types.includes('text/plain')) return;
    e.preventDefault();
    onImage(file, pastedName(file));
  });
}

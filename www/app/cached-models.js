// The "Cached models" panel: what this browser's storage holds, each with a Delete button.
import { deleteCachedModel, listCachedModels } from '../sdweb.js';
import { fmtBytes } from './format.js';

/**
 * @typedef {{ model: string, revision?: string, bytes: number, files: number }} CachedModel
 *
 * @param {HTMLElement} list the panel's <ul>
 * @param {object} deps
 * @param {(url: string) => string} deps.nameOf a model's name for its URL
 * @param {(cached: CachedModel[]) => void} deps.onList called with every fresh listing
 * @param {(err: unknown) => void} deps.showError
 */
export function createCachedModels(list, { nameOf, onList, showError }) {
  async function refresh() {
    /** @type {CachedModel[]} */
    let cached;
    try { cached = await listCachedModels(); } catch (e) { console.warn('listCachedModels failed', e); cached = []; }
    onList(cached);
    list.replaceChildren(...(cached.length ? cached.map(item) : [emptyNote()]));
  }

  /** @param {CachedModel} c */
  function item(c) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'cached-name';
    name.textContent = nameOf(c.model);
    name.title = c.model + (c.revision ? ` @ ${c.revision}` : '');
    const size = document.createElement('span');
    size.className = 'cached-size';
    size.textContent = `${fmtBytes(c.bytes)} · ${c.files} file${c.files === 1 ? '' : 's'}`;
    const del = document.createElement('button');
    del.type = 'button'; del.className = 'btn btn-small'; del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete cached ${name.textContent}`);
    del.addEventListener('click', async () => {
      del.disabled = true;
      try { await deleteCachedModel(c.model); } catch (e) { showError(e); }
      refresh();
    });
    li.append(name, size, del);
    return li;
  }

  return { refresh };
}

function emptyNote() {
  const li = document.createElement('li');
  li.className = 'hint';
  li.textContent = 'No models cached yet.';
  return li;
}
